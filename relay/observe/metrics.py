"""Prometheus metrics: ``GET /metrics`` on the admin port, in the text exposition format.

Most figures are read from relay's own counters when Prometheus scrapes, so
routing pays nothing for them; only the delivery latency histogram is
observed as messages are routed (once per message, not per recipient).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.core.cluster_reading import ClusterStatusReading
from relay.core.instances import OVERFLOW_INSTANCE
from relay.core.snapshot import BrokerReading, NodeSnapshot, OverloadReading
from relay.core.worker_reading import LatencyReading

#: Bounds (seconds) of ``relay_delivery_latency_seconds``.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: What it times. Not the socket writes: the coalescer makes those in the next
#: turns of the loop, in slices, so a fan-out to thousands ends well after this.
DELIVERY_LATENCY_HELP = (
    "Time from a POST's arrival until its message is queued for its local browsers "
    "(in broker mode: and holds its place in Redis); the socket writes follow."
)


class NodeMetrics(Collector):
    """Every metric of one node, in a registry of its own (several nodes may share a process)."""

    def __init__(self, read: Callable[[], NodeSnapshot]) -> None:
        """Collect from ``read()``, the node's snapshot, at scrape time.

        Registering collects once, so ``read`` must already work.
        """
        self._read = read
        self.registry = CollectorRegistry(auto_describe=True)
        self.delivery_latency = Histogram(
            "relay_delivery_latency_seconds",
            DELIVERY_LATENCY_HELP,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(self)

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """Read the node's counters (called by the registry on each scrape)."""
        return snapshot_families(self._read())

    def latency(self) -> LatencyReading:
        """The delivery latency histogram as a typed reading (for a worker's siblings)."""
        bounds: list[float] = []
        counts: list[int] = []
        total = 0.0
        for family in self.delivery_latency.collect():
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    if sample.labels["le"] != "+Inf":
                        bounds.append(float(sample.labels["le"]))
                    counts.append(int(sample.value))
                elif sample.name.endswith("_sum"):
                    total = sample.value
        return LatencyReading(tuple(bounds), tuple(counts), total)


def snapshot_families(snapshot: NodeSnapshot) -> Iterator[Metric]:
    """Every metric family read from ``snapshot`` (all but the latency histogram)."""
    yield _gauge(
        "relay_browser_connections",
        "Open browser connections (handshakes included).",
        snapshot.connections,
    )
    rejected = CounterMetricFamily(
        "relay_browser_connections_rejected",
        "Browser connections refused or dropped, by reason.",
        labels=["reason"],
    )
    for reason, count in sorted(snapshot.rejected.items()):
        rejected.add_metric([reason], count)
    yield rejected
    yield _gauge(
        "relay_subscriptions",
        "Keys subscribed to, over all browsers.",
        snapshot.subscriptions,
    )
    yield from _instances(snapshot)
    yield from _peers(snapshot)
    if snapshot.broker is not None:
        yield from _broker(snapshot.broker)
    if snapshot.cluster_status is not None:
        yield from _cluster_status(snapshot.cluster_status)
    if snapshot.alerts is not None:
        yield from _alerts(snapshot.alerts)


def _instances(snapshot: NodeSnapshot) -> Iterator[Metric]:
    connected = CounterMetricFamily(
        "relay_browser_handshakes",
        "Browsers that completed a handshake, by instance.",
        labels=["instance"],
    )
    messages_in = CounterMetricFamily(
        "relay_messages_in",
        "Notifications received (POSTs), by instance.",
        labels=["instance"],
    )
    messages_out = CounterMetricFamily(
        "relay_messages_out",
        "Messages written to browsers, by instance.",
        labels=["instance"],
    )
    history = GaugeMetricFamily(
        "relay_history_messages",
        "Messages retained for replay, by instance.",
        labels=["instance"],
    )
    for instance, reading in sorted(snapshot.instances.items()):
        connected.add_metric([instance], reading.clients_total)
        messages_in.add_metric([instance], reading.messages_in)
        messages_out.add_metric([instance], reading.messages_out)
        history.add_metric([instance], reading.history_size)
    yield from (connected, messages_in, messages_out, history)
    yield _gauge(
        "relay_history_bytes",
        "Bytes of the messages retained for replay, all instances (bounded by history.max_bytes).",
        snapshot.history_bytes,
    )
    yield _gauge(
        "relay_instances",
        "Instances counted one by one now (at most limits.max_instances).",
        len(snapshot.instances) - (OVERFLOW_INSTANCE in snapshot.instances),
    )
    yield CounterMetricFamily(
        "relay_instances_overflow",
        f'Posts, messages and browsers counted under instance="{OVERFLOW_INSTANCE}" '
        "because their instance could not be counted on its own.",
        value=snapshot.instances_overflowed,
    )


def _peers(snapshot: NodeSnapshot) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "relay_peer_up",
        "1 when the peer answered its last POST, 0 when it did not.",
        labels=["peer"],
    )
    queue = GaugeMetricFamily(
        "relay_peer_queue_messages", "Messages waiting for the peer.", labels=["peer"]
    )
    sent = CounterMetricFamily("relay_peer_sent", "Messages the peer accepted.", labels=["peer"])
    failed = CounterMetricFamily(
        "relay_peer_failed", "Failed POSTs to the peer (each retry counts).", labels=["peer"]
    )
    dropped = CounterMetricFamily(
        "relay_peer_dropped", "Messages given up on (queue full or too old).", labels=["peer"]
    )
    requests = CounterMetricFamily(
        "relay_peer_requests",
        "POSTs the peer answered (a batch carries many messages).",
        labels=["peer"],
    )
    for peer in snapshot.peers:
        if peer.is_self:
            continue
        name = [peer.url]
        up.add_metric(name, 1 if peer.state == "up" else 0)
        queue.add_metric(name, peer.queue)
        sent.add_metric(name, peer.sent)
        failed.add_metric(name, peer.failed)
        dropped.add_metric(name, peer.dropped)
        requests.add_metric(name, peer.requests)
    yield from (up, queue, sent, failed, dropped, requests)
    if snapshot.overload is not None:
        yield from _overload(snapshot.overload)


def _overload(overload: OverloadReading) -> Iterator[Metric]:
    """The overload policy's counters (see ``peering.when_full``)."""
    yield CounterMetricFamily(
        "relay_overload_refused",
        "Posts answered 503 because a peer link that is up had a full queue.",
        value=overload.refused,
    )
    yield CounterMetricFamily(
        "relay_overload_episodes",
        "Times a peer link that is up filled its queue (see peering.when_full).",
        value=overload.episodes,
    )
    yield _gauge(
        "relay_overload_active",
        "1 while a peer link that is up has a full queue, else 0.",
        1 if overload.active else 0,
    )


def _broker(broker: BrokerReading) -> Iterator[Metric]:
    yield _gauge("relay_broker_up", "1 when the link to Redis is up, else 0.", broker.state == "up")
    yield _gauge(
        "relay_broker_queue_messages",
        "Posts waiting to be published while Redis is away.",
        broker.queue,
    )
    for name, documentation, value in (
        ("relay_broker_published", "Posts published to Redis.", broker.published),
        ("relay_broker_received", "Messages received from Redis.", broker.received),
        ("relay_broker_dropped", "Posts never published (queue full or too old).", broker.dropped),
        ("relay_broker_reconnects", "Outages of Redis recovered from.", broker.reconnects),
        (
            "relay_broker_stale_subscriptions",
            "Subscriptions re-established because they received nothing.",
            broker.stale_subscriptions,
        ),
    ):
        yield CounterMetricFamily(name, documentation, value=value)


def _cluster_status(reading: ClusterStatusReading) -> Iterator[Metric]:
    """Gauges for the cluster-status module's view of Phorge's databases and repositories."""
    yield _gauge(
        "relay_cluster_read_only",
        "1 when the master is unhealthy and Phorge degrades to read-only, else 0.",
        1 if reading.mode == "read-only" else 0,
    )
    healthy = GaugeMetricFamily(
        "relay_database_healthy",
        "1 when the host's last five checks succeeded.",
        labels=["host", "role"],
    )
    okay = GaugeMetricFamily(
        "relay_database_connection_okay",
        "1 when the last check connected and queried.",
        labels=["host", "role"],
    )
    delay = GaugeMetricFamily(
        "relay_database_replication_delay_seconds",
        "Seconds a replica is behind its master.",
        labels=["host"],
    )
    for database in reading.databases:
        if database.disabled:
            continue
        labels = [f"{database.host}:{database.port}", database.role]
        healthy.add_metric(labels, 1 if database.health.healthy else 0)
        connection = database.connection
        okay.add_metric(labels, 1 if connection is not None and connection.status == "okay" else 0)
        replication = database.replication
        if replication is not None and replication.delay is not None:
            delay.add_metric(labels[:1], replication.delay)
    yield from (healthy, okay, delay)
    verdicts = GaugeMetricFamily(
        "relay_repository_service_verdict",
        "1 for each repository service's current sync verdict.",
        labels=["service", "verdict"],
    )
    services = () if reading.repositories is None else reading.repositories.services
    for service in services:
        verdicts.add_metric([service.name, service.verdict], 1)
    yield verdicts


def _alerts(alerts: Mapping[str, int]) -> Iterator[Metric]:
    """The alert webhook's counters."""
    for name, documentation in (
        ("sent", "Alerts the webhook accepted."),
        ("failed", "Alerts given up on after every attempt failed."),
        ("dropped", "Alerts dropped unsent because the queue was full."),
    ):
        yield CounterMetricFamily(f"relay_alerts_{name}", documentation, value=alerts[name])
    yield _gauge("relay_alerts_queue", "Alerts waiting to be sent.", alerts["queue"])


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
