"""The config file's models: Aphlict's JSON format, as frozen pydantic models.

An unmodified Aphlict file loads unchanged. relay's own settings live in
sections Aphlict does not know (``history``, ``limits``, ``broker``); each has
defaults, so a plain Aphlict file needs none of them. ``relay.config.loading``
reads a file into these models.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from relay.config.alerts import AlertsConfig
from relay.config.broker import QUEUE_MAX_BYTES, BrokerConfig
from relay.config.cluster_status import ClusterStatusConfig
from relay.config.hosts import base_url

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

    @field_validator("ssl_key", "ssl_cert", "ssl_chain", mode="before")
    @classmethod
    def _empty_means_unset(cls, path: object) -> object:
        # Aphlict tests these for truth: "" is no TLS there, so it is here.
        return None if path == "" else path

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

    @field_validator("host")
    @classmethod
    def _host_without_brackets(cls, host: str) -> str:
        # Brackets belong to URLs; relay adds them where it builds one (``url``).
        if host.startswith("[") and host.endswith("]"):
            raise ValueError(f'write the IPv6 address without brackets: "{host[1:-1][:80]}"')
        # Loose on purpose: Aphlict's peers may be names a stricter rule refuses (a
        # container's "relay_1"), but never a URL, a path or two words.
        if _NOT_IN_A_HOST.search(host) and not _is_ip(host):
            raise ValueError(f'must be a host name or an IP address alone, not "{host[:80]}"')
        return host

    @property
    def address(self) -> str:
        """``host:port``, the peer's identity in the cluster list."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``protocol://host:port`` of the peer's admin port (an IPv6 host in brackets)."""
        return base_url(self.protocol, self.host, self.port)


#: Default bound of the message bytes history keeps, all instances together.
HISTORY_MAX_BYTES = 64 * 1024 * 1024


class HistoryConfig(_Section):
    """What each instance keeps for ``replay``: the last N messages of the last T seconds."""

    max_messages: int = Field(default=4096, ge=0)
    max_age_seconds: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    #: The most message bytes kept, all instances together (relay's own; Aphlict has no bound).
    max_bytes: int = Field(default=HISTORY_MAX_BYTES, ge=1024)


class PeeringConfig(_Section):
    """How this node talks to its cluster peers (relay's own; Aphlict has no such knobs)."""

    #: Whole-request deadline for one POST to a peer (Phorge gives its own posts 2 s).
    timeout_seconds: float = Field(default=2.0, gt=0, allow_inf_nan=False)
    #: Messages queued per peer while it is slow or down; the oldest are dropped first.
    queue_size: int = Field(default=1000, ge=1)
    #: ...and at most this many bytes of them per peer.
    queue_max_bytes: int = Field(default=QUEUE_MAX_BYTES, ge=64 * 1024)
    #: Queued messages older than this are dropped: replay would not return them anyway.
    queue_max_age_seconds: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    #: Concurrent POSTs per peer over its keep-alive connections, for a peer
    #: sent one message per POST (Aphlict); a relay peer has one batch in flight.
    max_in_flight: int = Field(default=4, ge=1, le=64)
    #: First retry delay after a failure; it doubles per failure (with jitter) up to the max.
    backoff_initial_seconds: float = Field(default=0.25, gt=0, allow_inf_nan=False)
    backoff_max_seconds: float = Field(default=15.0, gt=0, allow_inf_nan=False)
    #: Mesh mode: seconds between this node's announcements to its peers (presence).
    presence_interval_seconds: float = Field(default=2.0, ge=0.05, allow_inf_nan=False)
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
    #: Instances counted one by one (status counters, metrics series); posts and
    #: browsers naming further ones are counted together under "(other)".
    max_instances: int = Field(default=256, ge=1)

    # Upgrades (relay.node.handoff).
    #: How long either side of a handoff waits for the other's next answer before it
    #: gives up (the old process serves on) or, at the end, kills a hung old process.
    handoff_answer_seconds: float = Field(default=30.0, gt=0, allow_inf_nan=False)

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

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, networks: tuple[str, ...]) -> tuple[str, ...]:
        for index, network in enumerate(networks):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f'entry {index}, "{network[:80]}", is not a network') from None
        return networks

    @model_validator(mode="after")
    def _one_secret_source(self) -> AdminConfig:
        if self.secret_file is not None and self.secret_env is not None:
            raise ValueError('give "secret_file" or "secret_env", not both')
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
    #: The webhook told when something goes wrong; off when absent.
    alerts: AlertsConfig | None = None
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
#: What no host name holds: a scheme's or a port's colon, a path, credentials, spaces.
_NOT_IN_A_HOST = re.compile(r"[\s/:@?#\\]")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_host(text: str) -> bool:
    """Whether ``text`` is an IP address or a well-formed host name (it may not resolve)."""
    if _is_ip(text):
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
