"""Configuration: Aphlict's JSON file format, loaded once into frozen models.

An unmodified Aphlict file loads unchanged. relay's own settings live in
sections Aphlict does not know (``history``, ``limits``, ``broker``); each has defaults, so
a plain Aphlict file needs none of them. Every problem found is reported with
the file, the entry index and the field, in plain words.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from relay.broker.config import BrokerConfig
from relay.config_errors import describe_error
from relay.dbwatch.config import ClusterStatusConfig
from relay.errors import ConfigError

#: Aphlict's default ports: browsers on the client port, Phorge on the admin port.
DEFAULT_CLIENT_PORT = 22280
DEFAULT_ADMIN_PORT = 22281
#: More worker processes than this is a typo, not a machine.
MAX_WORKERS = 256


class _Section(BaseModel):
    """Base of every config model: immutable, strict, no unknown keys."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        populate_by_name=True,
        # Never print rejected values in errors: one of them could be a password.
        hide_input_in_errors=True,
    )


class ServerConfig(_Section):
    """One listener: ``client`` (browsers, WebSocket) or ``admin`` (HTTP)."""

    type: Literal["client", "admin"]
    port: int = Field(ge=0, le=65535)
    listen: str | None = None
    ssl_key: str | None = Field(default=None, alias="ssl.key")
    ssl_cert: str | None = Field(default=None, alias="ssl.cert")
    ssl_chain: str | None = Field(default=None, alias="ssl.chain")

    @field_validator("listen")
    @classmethod
    def _listen_is_an_address(cls, listen: str | None) -> str | None:
        if listen and not is_host(listen):
            raise ValueError(f'"{listen[:80]}" is neither an IP address nor a host name')
        return listen

    @model_validator(mode="after")
    def _ssl_files_come_together(self) -> ServerConfig:
        if self.ssl_key and not self.ssl_cert:
            raise ValueError('"ssl.key" is set but "ssl.cert" is not; TLS needs both')
        if self.ssl_cert and not self.ssl_key:
            raise ValueError('"ssl.cert" is set but "ssl.key" is not; TLS needs both')
        if self.ssl_chain and not (self.ssl_key and self.ssl_cert):
            raise ValueError('"ssl.chain" is set without "ssl.key" and "ssl.cert"')
        return self

    @property
    def bind_host(self) -> str:
        """The address to bind: ``listen``, or every IPv4 address as Aphlict does."""
        return self.listen or "0.0.0.0"

    @property
    def uses_tls(self) -> bool:
        """Whether this listener serves TLS."""
        return self.ssl_cert is not None


class LogConfig(_Section):
    """A log file; its directory is created when missing."""

    path: str = Field(min_length=1)


class PeerConfig(_Section):
    """A cluster node (possibly this very node) that receives every notification.

    ``host``, ``port`` and ``protocol`` are Aphlict's; the rest are relay's own
    per-peer TLS settings.
    """

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    protocol: Literal["http", "https"]
    #: CA bundle to verify this peer's certificate with, instead of peering.ca_file.
    ca_file: str | None = None
    #: Verify the peer's certificate (https only). Turning this off must be explicit.
    tls_verify: bool = True

    @property
    def address(self) -> str:
        """``host:port``, the peer's identity in the cluster list."""
        return f"{self.host}:{self.port}"


class HistoryConfig(_Section):
    """What each instance keeps for ``replay``: the last N messages of the last T seconds."""

    max_messages: int = Field(default=4096, ge=0)
    max_age_seconds: float = Field(default=60.0, gt=0, allow_inf_nan=False)


class PeeringConfig(_Section):
    """How this node talks to its cluster peers (relay's own; Aphlict has no such knobs)."""

    #: Whole-request deadline for one POST to a peer (Phorge gives its own posts 2 s).
    timeout_seconds: float = Field(default=2.0, gt=0, allow_inf_nan=False)
    #: Messages queued per peer while it is slow or down; the oldest are dropped first.
    queue_size: int = Field(default=1000, ge=1)
    #: Queued messages older than this are dropped: replay would not return them anyway.
    queue_max_age_seconds: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    #: Concurrent POSTs per peer over its keep-alive connections.
    max_in_flight: int = Field(default=4, ge=1, le=64)
    #: First retry delay after a failure; it doubles per failure (with jitter) up to the max.
    backoff_initial_seconds: float = Field(default=0.25, gt=0, allow_inf_nan=False)
    backoff_max_seconds: float = Field(default=15.0, gt=0, allow_inf_nan=False)
    #: CA bundle for https peers; the system's trust store when null.
    ca_file: str | None = None
    #: When a peer that is up has a full queue (its link cannot keep up): "refuse"
    #: answers new posts from application servers 503 (Phorge then tries its next
    #: admin server) until the queue drains; "drop" accepts them and drops the
    #: peer's oldest queued messages. Either way it is counted and logged.
    when_full: Literal["refuse", "drop"] = "refuse"


class LimitsConfig(_Section):
    """Bounds on what clients may make relay hold in memory or wait for."""

    # Admin side (application servers and peers).
    #: Largest POST body the admin port reads; larger ones get 413 unread.
    admin_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Time an admin request has to send its headers (also the idle keep-alive limit).
    admin_header_seconds: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    #: Time an admin request has to send its whole body once headers are in.
    admin_body_seconds: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    #: Most keys one notification may name in ``subscribers``.
    max_subscribers: int = Field(default=10_000, ge=1)
    #: Most fingerprints a ``touched`` list may hold (a cluster larger than this is unlikely).
    max_touched: int = Field(default=64, ge=1)

    # Browser side.
    #: Largest message a browser may send (a subscribe list, say); larger closes with 1009.
    browser_message_bytes: int = Field(default=64 * 1024, ge=1024)
    #: How long a new browser connection has to complete its WebSocket (and TLS) handshake.
    handshake_seconds: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    #: Open browser connections per node; more are answered 503.
    max_connections: int = Field(default=100_000, ge=1)
    #: Open browser connections per client address; 0 means no per-address cap.
    max_connections_per_ip: int = Field(default=0, ge=0)
    #: Keys one connection may subscribe to; extra ones are refused, the connection stays.
    max_subscriptions: int = Field(default=1000, ge=1)
    #: Longest key a browser may subscribe to; longer ones are refused.
    max_key_length: int = Field(default=255, ge=1)
    #: Bytes queued for a browser that is not reading; past this it is reset (TCP RST).
    outbound_buffer_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)
    #: Kernel send buffer per browser socket (the OS doubles it); 0 leaves the OS's
    #: autotuning, which lets a browser that stops reading pin up to 4 MiB of kernel memory.
    socket_send_buffer_bytes: int = Field(default=128 * 1024, ge=0)
    #: Most bytes one ``replay`` sends; the newest messages that fit are sent, in order.
    replay_bytes: int = Field(default=512 * 1024, ge=1024)
    #: A browser silent this long is pinged...
    ping_interval_seconds: float = Field(default=20.0, gt=0, allow_inf_nan=False)
    #: ...and dropped if still silent this much later.
    ping_timeout_seconds: float = Field(default=20.0, gt=0, allow_inf_nan=False)


class BrowsersConfig(_Section):
    """Who may connect to the client port, and how."""

    #: Allowed ``Origin`` values (Phorge's base URIs, e.g. "https://phorge.example.com");
    #: empty allows any origin.
    origins: tuple[str, ...] = ()
    #: Whether a handshake without an ``Origin`` header is accepted when ``origins`` is set.
    #: Browsers always send one; only non-browser clients (monitoring) omit it.
    allow_missing_origin: bool = True
    #: Negotiate permessage-deflate. Off by default: it costs memory per connection.
    compression: bool = False


class AdminConfig(_Section):
    """Who may talk to the admin port."""

    #: Client networks allowed on the admin port (CIDR); empty allows any address.
    allowed_networks: tuple[str, ...] = ()
    #: Shared secret required as "Authorization: Bearer <secret>" on POSTs, read from a
    #: file or an environment variable (never written in this file). Peer links send it.
    secret_file: str | None = None
    secret_env: str | None = None

    @model_validator(mode="after")
    def _one_secret_source(self) -> AdminConfig:
        if self.secret_file and self.secret_env:
            raise ValueError('give "secret_file" or "secret_env", not both')
        for network in self.allowed_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f'"{network}" in allowed_networks is not a network') from None
        return self


class DashboardConfig(_Section):
    """The live status page on the admin port, and the node-status messages it reads."""

    enabled: bool = True
    #: Key the node announces its own status on (to browsers of ``instance``).
    key: str = "relay.node"
    instance: str = "default"
    interval_seconds: float = Field(default=2.0, gt=0, allow_inf_nan=False)
    #: How far back the page's charts reach; the node keeps one sample per interval
    #: for this long (at most 6,000 samples, ~1 MiB).
    chart_seconds: float = Field(default=600.0, gt=0, le=86_400, allow_inf_nan=False)


class ShutdownConfig(_Section):
    """How a stopping node lets its browsers go (SIGTERM, SIGINT).

    Readiness turns 503 and new browsers are refused (503) at once; the
    connected ones are closed with 1001 spread over the drain window, so that
    they do not all reconnect elsewhere in the same second.
    """

    #: Longest time the browsers' closes are spread over.
    drain_seconds: float = Field(default=5.0, ge=0, le=300, allow_inf_nan=False)
    #: Fewest closes per second: a node with few browsers finishes sooner.
    drain_min_rate: float = Field(default=100.0, gt=0, allow_inf_nan=False)


class Config(_Section):
    """A whole relay configuration."""

    servers: tuple[ServerConfig, ...]
    logs: tuple[LogConfig, ...] = ()
    cluster: tuple[PeerConfig, ...] = ()
    pidfile: str | None = None
    # Aphlict passes this to Node's heap size; Python has no such knob, so it
    # is accepted for compatibility and otherwise ignored.
    memory_hint: int | None = Field(default=None, alias="memory.hint")
    history: HistoryConfig = HistoryConfig()
    limits: LimitsConfig = LimitsConfig()
    peering: PeeringConfig = PeeringConfig()
    browsers: BrowsersConfig = BrowsersConfig()
    admin: AdminConfig = AdminConfig()
    dashboard: DashboardConfig = DashboardConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    #: The side module watching Phorge's databases and repositories; off when absent.
    cluster_status: ClusterStatusConfig | None = None
    #: Broker mode: the Redis the nodes publish to and receive from; off when absent.
    broker: BrokerConfig | None = None
    #: "text" for people, "json" (one object per line) for log shippers.
    log_format: Literal["text", "json"] = "text"
    #: Processes serving this node's ports together (``relay serve --workers N``
    #: overrides it); more than one needs a ``broker`` to meet through.
    workers: int = Field(default=1, ge=1, le=MAX_WORKERS)

    def listeners(self, kind: Literal["client", "admin"]) -> list[ServerConfig]:
        """The servers of one kind, in file order."""
        return [server for server in self.servers if server.type == kind]


#: One label of a host name (RFC 1123): letters, digits and inner hyphens.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def is_host(text: str) -> bool:
    """Whether ``text`` is an IP address or a well-formed host name (it may not resolve)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return True
    labels = text.removesuffix(".").split(".")
    # All digits and dots, yet no IP address (say, 300.1.2.3): a mistyped address.
    if all(label.isdigit() for label in labels):
        return False
    return len(text) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def default_config() -> Config:
    """Aphlict's default listeners, but bound to loopback only.

    Used when relay starts without ``--config``: nothing should listen beyond
    this machine unless an operator asked for it.
    """
    return Config(
        servers=(
            ServerConfig(type="client", port=DEFAULT_CLIENT_PORT, listen="127.0.0.1"),
            ServerConfig(type="admin", port=DEFAULT_ADMIN_PORT, listen="127.0.0.1"),
        )
    )


def load_config(path: str | Path) -> Config:
    """Read and validate the config file at ``path``.

    Raises:
        ConfigError: listing every problem found, each naming the file.
    """
    return parse_config(read_config_data(path), str(path))


def read_config_data(path: str | Path) -> object:
    """The decoded JSON of the config file at ``path``, not yet validated.

    Raises:
        ConfigError: the file cannot be read or is not JSON; names the file.
    """
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read the file: {exc.strerror}"]) from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(
            [f"{source}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"]
        ) from None
    return data


def parse_config(data: object, source: str = "<config>") -> Config:
    """Validate already-decoded JSON ``data``; ``source`` names it in errors.

    Raises:
        ConfigError: listing every problem found, in the order of the file.
    """
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the file must hold a JSON object at the top level"])
    # Rules spanning entries are checked on the file's data, so that they are
    # reported along with the problems of single entries, not after those are fixed.
    found = _cross_entry_problems(data)
    config = None
    try:
        # JSON mode: strict about types, yet lists may fill tuples and objects
        # may fill nested models, exactly as they arrive from the file.
        config = Config.model_validate_json(orjson.dumps(data))
    except ValidationError as exc:
        found += [(error["loc"], describe_error(error)) for error in exc.errors()]
    if found:
        order = {key: index for index, key in enumerate(data)}
        found.sort(key=lambda problem: _file_position(problem[0], order))
        raise ConfigError([f"{source}: {problem}" for _, problem in found])
    assert config is not None
    return config


Located = tuple[tuple[int | str, ...], str]


def _file_position(loc: Sequence[int | str], order: dict[str, int]) -> tuple[int, int]:
    """Where a problem sits in the file: its top-level key, then its entry's index."""
    key = order.get(str(loc[0]), len(order)) if loc else -1
    entry = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else -1
    return key, entry


def _cross_entry_problems(data: dict[str, Any]) -> list[Located]:
    """Rules that span entries, which no single model can check.

    They read the file's data as it is, leniently: an entry too broken to
    judge is skipped here (its own problem is reported by the models).
    """
    problems: list[Located] = []
    servers = _entries(data.get("servers"))
    if isinstance(data.get("servers"), list) and not data["servers"]:
        problems.append(
            (("servers",), "servers: no servers are configured; relay needs a client and an admin")
        )
    elif servers and all(entry.get("type") in ("client", "admin") for _, entry in servers):
        kinds = {entry["type"] for _, entry in servers}
        for kind, users in (("client", "browsers"), ("admin", "application servers")):
            if kind not in kinds:
                problems.append(
                    (
                        ("servers",),
                        f'servers: no "{kind}" server is configured; {users} need one to connect',
                    )
                )
    workers = data.get("workers")
    if (
        isinstance(workers, int)
        and not isinstance(workers, bool)
        and workers > 1
        and (data.get("broker") is None)
    ):
        problems.append((("workers",), f"workers: {_needs_a_broker(workers)}"))
    ports = [(index, entry.get("port")) for index, entry in servers]
    problems += _duplicates(
        ((index, port) for index, port in ports if _is_int(port) and port),
        lambda index, first, port: (
            ("servers", index, "port"),
            f"servers[{index}].port: port {port} is already used by servers[{first}]",
        ),
    )
    peers = [
        (index, f"{entry['host']}:{entry['port']}")
        for index, entry in _entries(data.get("cluster"))
        if isinstance(entry.get("host"), str) and _is_int(entry.get("port"))
    ]
    problems += _duplicates(
        peers,
        lambda index, first, address: (
            ("cluster", index),
            f"cluster[{index}]: peer {address} is listed twice (also at cluster[{first}])",
        ),
    )
    return problems


def _entries(section: object) -> list[tuple[int, dict[str, Any]]]:
    """The objects of a list section, with their indexes; nothing if it is not a list."""
    if not isinstance(section, list):
        return []
    return [(index, entry) for index, entry in enumerate(section) if isinstance(entry, dict)]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def workers_without_broker(config: Config, count: int) -> str | None:
    """Why ``count`` workers cannot serve ``config``, or None when they can."""
    if count <= 1 or config.broker is not None:
        return None
    return _needs_a_broker(count)


def _needs_a_broker(count: int) -> str:
    # Workers meet through the broker: without one, a post reaching one
    # worker would never reach the browsers of the others.
    return (
        f'{count} workers need a "broker" section: workers meet through the broker, '
        "without one a post would reach only the browsers of the worker it arrived at"
    )


def _duplicates(items: Iterable[tuple[int, Any]], describe: Any) -> list[Any]:
    """One problem per item whose value an earlier item already had."""
    first_seen: dict[Any, int] = {}
    problems = []
    for index, value in items:
        if value in first_seen:
            problems.append(describe(index, first_seen[value], value))
        else:
            first_seen[value] = index
    return problems
