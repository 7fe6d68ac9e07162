"""Configuration: the file's models, loading them, and what they refer to.

- ``models``: the frozen models of Aphlict's JSON format and relay's sections;
- ``loading``: file -> models, every problem naming the file, entry and field;
- ``problems``: pydantic's validation errors in plain words;
- ``broker``, ``cluster_status``: the sections of broker mode and of the
  cluster-status module;
- ``secrets``: every secret read from a file or a variable, one way; the
  admin shared secret;
- ``tls``: server certificates into SSL contexts;
- ``hosts``: hosts as they appear in URLs.

The models and the loaders are handed on here: ``from relay.config import
Config, load_config``. Nothing in this package does I/O beyond reading files.
"""

from relay.config.loading import (
    load_config,
    parse_config,
    read_config_data,
    workers_without_broker,
)
from relay.config.models import (
    DEFAULT_ADMIN_PORT,
    DEFAULT_CLIENT_PORT,
    MAX_WORKERS,
    AdminConfig,
    BrowsersConfig,
    Config,
    DashboardConfig,
    HistoryConfig,
    LimitsConfig,
    LogConfig,
    PeerConfig,
    PeeringConfig,
    ServerConfig,
    ShutdownConfig,
    default_config,
    is_host,
)

__all__ = [
    "DEFAULT_ADMIN_PORT",
    "DEFAULT_CLIENT_PORT",
    "MAX_WORKERS",
    "AdminConfig",
    "BrowsersConfig",
    "Config",
    "DashboardConfig",
    "HistoryConfig",
    "LimitsConfig",
    "LogConfig",
    "PeerConfig",
    "PeeringConfig",
    "ServerConfig",
    "ShutdownConfig",
    "default_config",
    "is_host",
    "load_config",
    "parse_config",
    "read_config_data",
    "workers_without_broker",
]
