"""Adding up the workers' readings into the node's figures: pure, over typed readings.

Phorge reads Aphlict's status keys, so they keep their meaning: a browser is
connected to exactly one worker and each delivery happens on one, so those
are summed; but every worker sees every message once (the posts it took
itself, the rest through the broker) and keeps the same history, so
``messages.in`` and the history figures are the largest any worker reports
(the longest-running worker's, after a restart), not a sum. The uptime is
the node's (the supervisor's). Each worker has its own link to each peer
and to Redis: their counts add up, and a link that is not up on one worker
is not up for the node. The cluster-status reading and the ``nodes``
section are the answering worker's own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from relay.core.snapshot import (
    BrokerReading,
    InstanceReading,
    NodeSnapshot,
    OverloadReading,
    PeerReading,
)
from relay.core.worker_reading import LatencyReading, NodeView, WorkerReading, WorkerSlot

#: Peer-link figures that add up over the workers' links to the same peer.
_PEER_SUMMED = ("sent", "requests", "failed", "dropped", "queue", "in_flight")
#: Broker-link figures: each post is published by one worker, but every worker
#: receives every message (that is how they meet), once per worker.
_BROKER_SUMMED = ("published", "queue", "dropped", "reconnects", "stale_subscriptions")


def add_up(slots: Sequence[WorkerSlot], *, own: WorkerReading, uptime_ms: int) -> NodeView:
    """The node's view from every worker slot; ``own`` is the answering worker's reading.

    ``slots`` lists every slot in index order, ``own``'s included; only the
    serving ones count. ``uptime_ms`` is the node's (its supervisor's).
    """
    readings = [own, *(s.reading for s in slots if s.reading is not None and s.index != own.index)]
    snapshots = [reading.snapshot for reading in readings]
    mine = own.snapshot
    snapshot = NodeSnapshot(
        fingerprint=mine.fingerprint,
        uptime_ms=uptime_ms,
        connections=sum(s.connections for s in snapshots),
        rejected=_summed(s.rejected for s in snapshots),
        subscriptions=sum(s.subscriptions for s in snapshots),
        instances=_instances(snapshots),
        peers=_peers(snapshots),
        cluster_status=mine.cluster_status,
        broker=_broker([s.broker for s in snapshots if s.broker is not None]),
        overload=_overload([s.overload for s in snapshots if s.overload is not None]),
        instances_overflowed=sum(s.instances_overflowed for s in snapshots),
        alerts=None if mine.alerts is None else _summed(s.alerts or {} for s in snapshots),
        nodes=mine.nodes,
        # Each worker holds the whole history (every message reaches it through the broker).
        history_bytes=max(s.history_bytes for s in snapshots),
    )
    latency = add_latencies(reading.latency for reading in readings)
    # The answering worker charts its own latencies itself; its siblings' are added to them.
    recent = {reading.snapshot.fingerprint: reading.recent for reading in readings[1:]}
    return NodeView(snapshot, latency, tuple(slots), recent)


def add_latencies(histograms: Iterable[LatencyReading]) -> LatencyReading:
    """Histograms merged bucket by bucket: those with the first one's bounds.

    Every worker runs the same build, so the bounds agree; a histogram with
    other bounds (a mixed upgrade) cannot be merged faithfully and is left out.
    """
    merged: LatencyReading | None = None
    for histogram in histograms:
        if merged is None:
            merged = histogram
        elif histogram.bounds == merged.bounds:
            counts = tuple(a + b for a, b in zip(merged.counts, histogram.counts, strict=True))
            merged = LatencyReading(merged.bounds, counts, merged.total + histogram.total)
    return merged if merged is not None else LatencyReading()


def _summed(mappings: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for mapping in mappings:
        total.update(mapping)
    return dict(total)


def _instances(snapshots: Sequence[NodeSnapshot]) -> dict[str, InstanceReading]:
    """Each instance once: browsers and deliveries summed, messages and history the largest."""
    merged: dict[str, InstanceReading] = {}
    for snapshot in snapshots:
        for name, reading in snapshot.instances.items():
            seen = merged.get(name)
            merged[name] = reading if seen is None else _instance(seen, reading)
    return merged


def _instance(a: InstanceReading, b: InstanceReading) -> InstanceReading:
    ages = [age for age in (a.history_age_ms, b.history_age_ms) if age is not None]
    return InstanceReading(
        clients_active=a.clients_active + b.clients_active,
        clients_total=a.clients_total + b.clients_total,
        messages_in=max(a.messages_in, b.messages_in),
        messages_out=a.messages_out + b.messages_out,
        history_size=max(a.history_size, b.history_size),
        history_age_ms=max(ages) if ages else None,
    )


def _peers(snapshots: Sequence[NodeSnapshot]) -> tuple[PeerReading, ...]:
    """Each peer once, in the answering worker's order: counts added up, and its worst state.

    The node reaches a peer when every worker's link does, so a link that is
    not up is what the node shows.
    """
    merged: dict[tuple[str, int], PeerReading] = {}
    for snapshot in snapshots:
        for link in snapshot.peers:
            name = (link.host, link.port)
            seen = merged.get(name)
            if seen is None:
                merged[name] = link
                continue
            sums = {key: getattr(seen, key) + getattr(link, key) for key in _PEER_SUMMED}
            if seen.state == "up" and link.state != "up":
                worst = link.state, link.last_error, link.last_latency_ms
            else:
                worst = seen.state, seen.last_error, seen.last_latency_ms
            state, last_error, last_latency_ms = worst
            merged[name] = replace(
                seen, state=state, last_error=last_error, last_latency_ms=last_latency_ms, **sums
            )
    return tuple(merged.values())


def _broker(links: Sequence[BrokerReading]) -> BrokerReading | None:
    """The node's broker link: counts added up, and the state of a link that is not up.

    The node receives the whole cluster's messages only while every worker's
    link is up, so any worker's trouble is the node's.
    """
    if not links:
        return None
    sums = {key: sum(getattr(link, key) for link in links) for key in _BROKER_SUMMED}
    first = links[0]
    worst = next((link for link in links if link.state != "up"), first)
    return replace(
        first,
        state=worst.state,
        since_seconds=worst.since_seconds,
        last_error=worst.last_error,
        received=max(link.received for link in links),
        **sums,
    )


def _overload(readings: Sequence[OverloadReading]) -> OverloadReading | None:
    """The overload policy's counters summed; active while any worker is overloaded."""
    if not readings:
        return None
    return OverloadReading(
        policy=readings[0].policy,
        active=any(reading.active for reading in readings),
        refused=sum(reading.refused for reading in readings),
        episodes=sum(reading.episodes for reading in readings),
    )
