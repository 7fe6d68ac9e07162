"""A redis-py client for one broker session: the URL's server, or the master Sentinel names.

Commands time out after ``timeout_seconds`` and are never retried inside
redis-py: the broker's supervisor retries whole sessions, with backoff.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from relay.config.broker import BrokerConfig


def new_client(config: BrokerConfig, fingerprint: str) -> tuple[aioredis.Redis, Sentinel | None]:
    """A client for one session (and, with Sentinel, the Sentinel client to close after it)."""
    options: dict[str, Any] = {
        "socket_timeout": config.timeout_seconds,
        "socket_connect_timeout": config.connect_timeout_seconds,
        # The supervisor retries, with backoff; redis-py retrying inside a
        # command would only hold a publish up for longer.
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "client_name": f"relay-{fingerprint}",
    }
    if config.password is not None:
        options["password"] = config.password.get_secret_value()
    if config.uses_tls:
        options["ssl_ca_certs"] = config.ca_file
        options["ssl_cert_reqs"] = "required" if config.tls_verify else "none"
        options["ssl_check_hostname"] = config.tls_verify
    if not config.sentinels:
        return aioredis.Redis.from_url(config.url, **options), None
    parts = urlsplit(config.url)
    sentinel = Sentinel(
        [(address.host, address.port) for address in config.sentinels],
        sentinel_kwargs={
            "socket_timeout": config.timeout_seconds,
            "socket_connect_timeout": config.connect_timeout_seconds,
            "retry": Retry(NoBackoff(), 0),
        },
    )
    if parts.username:
        options["username"] = unquote(parts.username)
    if config.uses_tls:
        options["ssl"] = True
    options["db"] = int(parts.path.lstrip("/") or 0)
    # A new session asks the Sentinels again: after a fail-over, the new master.
    return sentinel.master_for(config.master_name, **options), sentinel
