"""What a node knows about itself at one moment, as one typed value.

The node builds a ``NodeSnapshot`` when asked; the Prometheus metrics, the
live status page and ``GET /status/`` read only that, never the node's parts,
so none of them imports the node and each figure is computed in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from relay import PROTOCOL_VERSION
from relay.config.hosts import base_url
from relay.core.cluster_reading import ClusterStatusReading


@dataclass(frozen=True, slots=True)
class InstanceReading:
    """Aphlict's per-instance counters, and the instance's retained history."""

    clients_active: int = 0
    clients_total: int = 0
    messages_in: int = 0
    messages_out: int = 0
    history_size: int = 0
    #: Age of the oldest retained message in milliseconds; None when none is retained.
    history_age_ms: int | None = None

    def aphlict_status(self, instance: str, uptime_ms: int) -> dict[str, Any]:
        """The status Aphlict reports for ``instance``, key for key."""
        return {
            "instance": instance,
            "uptime": uptime_ms,
            "clients.active": self.clients_active,
            "clients.total": self.clients_total,
            "messages.in": self.messages_in,
            "messages.out": self.messages_out,
            "version": PROTOCOL_VERSION,
            "history.size": self.history_size,
            "history.age": self.history_age_ms,
        }


@dataclass(frozen=True, slots=True)
class BrokerReading:
    """Broker mode: the link to Redis and what went through it."""

    #: The Redis URL (it never carries a password).
    url: str
    #: "connecting", "up" or "down".
    state: str
    #: Seconds in that state.
    since_seconds: float
    #: Why Redis was last found away; kept after it recovers.
    last_error: str | None
    #: Posts published to Redis.
    published: int
    #: Messages received from Redis (this node's own included, and skipped).
    received: int
    #: Posts waiting for Redis.
    queue: int
    #: Posts never published: the queue was full, or they waited too long.
    dropped: int
    #: Outages recovered from.
    reconnects: int
    #: Subscriptions re-established because nothing came through them.
    stale_subscriptions: int

    def status(self) -> dict[str, Any]:
        """The ``broker`` entry of ``/status/``."""
        return {
            "url": self.url,
            "state": self.state,
            "since_seconds": self.since_seconds,
            "last_error": self.last_error,
            "published": self.published,
            "received": self.received,
            "queue": self.queue,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "stale_subscriptions": self.stale_subscriptions,
        }


@dataclass(frozen=True, slots=True)
class PeerReading:
    """One peer link (``relay.links.peer_state``): where it goes, its state and its counts."""

    host: str
    port: int
    protocol: str
    #: Learned from the peer's receipts; None until one came.
    fingerprint: str | None
    #: The entry is this very node.
    is_self: bool
    #: "unknown", "up", "down", "refused" or "self".
    state: str
    #: The peer takes batches (it is a relay node).
    batching: bool
    #: Messages the peer accepted, and the POSTs it answered.
    sent: int
    requests: int
    #: Failed or refused POSTs (each retry counts).
    failed: int
    #: Messages given up on: the queue was full, they waited too long, or were refused.
    dropped: int
    #: Messages waiting, and messages in POSTs under way.
    queue: int
    in_flight: int
    last_error: str | None
    last_latency_ms: float | None

    @property
    def url(self) -> str:
        """``protocol://host:port``, the peer's admin port (an IPv6 host in brackets)."""
        return base_url(self.protocol, self.host, self.port)

    def status(self) -> dict[str, Any]:
        """The link's entry in the ``cluster`` list of ``/status/``."""
        return {
            "host": self.host,
            "port": self.port,
            "protocol": self.protocol,
            "fingerprint": self.fingerprint,
            "self": self.is_self,
            "state": self.state,
            "batching": self.batching,
            "sent": self.sent,
            "requests": self.requests,
            "failed": self.failed,
            "dropped": self.dropped,
            "queue": self.queue,
            "in_flight": self.in_flight,
            "last_error": self.last_error,
            "last_latency_ms": self.last_latency_ms,
        }


@dataclass(frozen=True, slots=True)
class OverloadReading:
    """The overload policy (``peering.when_full``) and its counters (``relay.links.overload``)."""

    #: "refuse" or "drop".
    policy: str
    #: Whether a peer link that is up has a full queue now.
    active: bool
    #: Posts answered 503 under the "refuse" policy.
    refused: int
    #: Times a peer link that is up filled its queue.
    episodes: int

    def status(self) -> dict[str, Any]:
        """The ``overload`` entry of ``/status/``."""
        return {
            "policy": self.policy,
            "active": self.active,
            "refused": self.refused,
            "episodes": self.episodes,
        }


@dataclass(frozen=True, slots=True)
class ProcessReading:
    """The code running this node: what an operator checks after an upgrade."""

    #: relay's version (``relay.__version__``) in this process.
    version: str
    #: When this process started, in unix seconds.
    started_at: float
    pid: int
    #: Browser connections taken over from the predecessor (``--take-over``), 0 if none.
    adopted: int

    def status(self) -> dict[str, Any]:
        """The ``process`` entry of ``/status/``; the start time in ISO 8601, UTC."""
        started = datetime.fromtimestamp(self.started_at, UTC)
        return {
            "version": self.version,
            "started_at": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "pid": self.pid,
            "adopted": self.adopted,
        }


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """One node's state for its readers (metrics, status page, ``/status/``)."""

    fingerprint: str
    uptime_ms: int
    #: Open browser sockets over every client listener, handshakes included.
    connections: int
    #: Browser connections refused or dropped by a limit, by reason.
    rejected: Mapping[str, int]
    #: Keys subscribed to, over all browsers.
    subscriptions: int
    #: Every instance counted now (posted to lately, or with browsers connected),
    #: and ``OVERFLOW_INSTANCE`` once anything is counted there.
    instances: Mapping[str, InstanceReading]
    #: Each peer link, this node's own entry included, in config order.
    peers: Sequence[PeerReading]
    #: The cluster-status module's view of Phorge; None when the module is off.
    cluster_status: ClusterStatusReading | None
    #: The link to Redis; None unless the node runs in broker mode.
    broker: BrokerReading | None = None
    #: The overload policy and its counters; None in tests that build a snapshot by hand.
    overload: OverloadReading | None = None
    #: Posts, messages and browsers counted under ``OVERFLOW_INSTANCE`` because their
    #: instance could not be counted on its own (``limits.max_instances``).
    instances_overflowed: int = 0
    #: The alert webhook's counters (sent, failed, dropped, queue); None when alerts are off.
    alerts: Mapping[str, int] | None = None
    #: Every node announced under the broker prefix or to the mesh (``relay.links.presence``).
    nodes: Mapping[str, Any] | None = None
    #: The running code and its start; None in tests that build a snapshot by hand.
    process: ProcessReading | None = None
    #: Bytes of the frames retained for replay, every instance's (what
    #: ``history.max_bytes`` bounds).
    history_bytes: int = 0

    def status(self, instance: str) -> dict[str, Any]:
        """``GET /status/``: Aphlict's keys for ``instance``, the fingerprint, peers and broker."""
        reading = self.instances.get(instance) or InstanceReading()
        status = reading.aphlict_status(instance, self.uptime_ms)
        status["fingerprint"] = self.fingerprint
        status["cluster"] = [peer.status() for peer in self.peers]
        if self.broker is not None:
            status["broker"] = self.broker.status()
        if self.overload is not None:
            status["overload"] = self.overload.status()
        if self.nodes is not None:
            status["nodes"] = dict(self.nodes)
        if self.process is not None:
            status["process"] = self.process.status()
        return status
