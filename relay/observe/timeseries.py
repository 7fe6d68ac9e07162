"""The last minutes of a node, for the status page's charts: a bounded ring of samples.

The node takes a sample each time it announces its status (every
``dashboard.interval_seconds``): rates from the difference with the previous
sample, gauges as they are, and the delivery latencies observed since (of
posts that reached a browser: the node observes only those). Only
the newest ``capacity`` samples are kept, so memory stays bounded (a few
hundred bytes a sample). Pure: it reads ``NodeSnapshot`` values and a clock it
is given, and does no I/O.

A worker of a ``--workers`` node charts the whole node's latencies: it also
keeps its own in short slots (``relay.core.latency_slots``), which its
siblings read with its reading, and adds theirs to its own at each sample.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from relay.core.cluster_reading import ClusterStatusReading
from relay.core.latency_slots import LatencySlot, LatencySlots, LatencyTotal, SiblingLatencies
from relay.core.snapshot import NodeSnapshot

#: Most samples kept, whatever the settings ask (10 minutes every 0.1 s).
MAX_CAPACITY = 6000
#: Latency slots per sample interval, and how many intervals of them a worker keeps
#: for its siblings (more than one: they sample on their own timers, and ask late).
SLOTS_PER_INTERVAL = 8
KEEP_INTERVALS = 3
#: Seconds of slots kept at least: a sibling that samples late (a busy host, a pause of
#: its loop) still finds the slots since its last sample, at a short interval too.
KEEP_AT_LEAST = 2.0


@dataclass(frozen=True, slots=True)
class Sample:
    """The node at one moment, with rates and latencies over the interval before it."""

    #: When, in the clock's seconds (monotonic: only differences mean anything).
    t: float
    #: Notifications received a second (POSTs and copies from peers).
    rate_in: float
    #: Messages written to browsers a second.
    rate_out: float
    #: Open browser connections.
    connections: int
    #: Mean and highest delivery latency of the POSTs of the interval (ms); None without any.
    latency_mean_ms: float | None
    latency_max_ms: float | None
    #: Messages waiting for peers, over every peer, and how many peers are not up.
    peer_queue: int
    peers_down: int
    #: Healthy and monitored (not disabled) databases, and whether Phorge is read-only;
    #: None when the cluster-status module is off.
    databases_healthy: int | None
    databases_total: int | None
    read_only: bool | None
    #: Broker mode: posts waiting for Redis, and whether Redis was found away
    #: (connecting is not away); None otherwise.
    broker_queue: int | None = None
    broker_down: bool | None = None
    #: How many posts the latency figures are over (every worker's, under ``--workers``).
    latency_count: int = 0


#: The field names, in order: the columns of ``TimeSeries.columns``.
SERIES = tuple(field.name for field in fields(Sample))


class TimeSeries:
    """The newest samples of a node, oldest first."""

    def __init__(self, clock: Callable[[], float], capacity: int, interval: float = 2.0) -> None:
        """Keep up to ``capacity`` samples (at most ``MAX_CAPACITY``), timed by ``clock``.

        ``interval`` is the seconds between samples (``dashboard.interval_seconds``).
        """
        self._clock = clock
        self._samples: deque[Sample] = deque(maxlen=_bounded(capacity))
        self._last_counts: tuple[float, int, int] | None = None
        self._latency = LatencyTotal()
        self._interval = interval
        self._slots = LatencySlots(clock, *_slot_settings(interval))
        self._siblings = SiblingLatencies()

    def resize(self, capacity: int, interval: float | None = None) -> None:
        """Keep up to ``capacity`` samples from now on, dropping the oldest if over."""
        self._samples = deque(self._samples, maxlen=_bounded(capacity))
        if interval is not None and interval != self._interval:
            self._interval = interval
            self._slots.configure(*_slot_settings(interval))

    @property
    def capacity(self) -> int:
        """How many samples are kept at most."""
        return self._samples.maxlen or 0

    def observe_latency(self, seconds: float) -> None:
        """Count one POST's delivery latency towards the next sample (and the siblings')."""
        self._latency = self._latency.plus(1, seconds, seconds)
        self._slots.observe(seconds)

    def recent_latencies(self) -> tuple[LatencySlot, ...]:
        """This process' latency slots, for its sibling workers' samples."""
        return self._slots.recent()

    def sample(
        self, snapshot: NodeSnapshot, siblings: Mapping[str, Sequence[LatencySlot]] | None = None
    ) -> Sample:
        """Take a sample from ``snapshot`` now, keep it, and return it.

        ``siblings`` are the other workers' finished latency slots, by
        worker: those not counted before count with this process' own. The
        first sample's rates are 0: there is nothing to measure them against.
        """
        now = self._clock()
        theirs = self._siblings.take(siblings or {})
        latency = self._latency.plus(theirs.count, theirs.total, theirs.maximum)
        self._latency = LatencyTotal()
        readings = snapshot.instances.values()
        messages_in = sum(r.messages_in for r in readings)
        messages_out = sum(r.messages_out for r in readings)
        rate_in = rate_out = 0.0
        if self._last_counts is not None and now > self._last_counts[0]:
            elapsed = now - self._last_counts[0]
            rate_in = max(messages_in - self._last_counts[1], 0) / elapsed
            rate_out = max(messages_out - self._last_counts[2], 0) / elapsed
        self._last_counts = (now, messages_in, messages_out)
        mean = max_ms = None
        if latency.count:
            mean = round(latency.total / latency.count * 1000, 3)
            max_ms = round(latency.maximum * 1000, 3)
        others = [peer for peer in snapshot.peers if not peer.is_self]
        healthy, total, read_only = _databases(snapshot.cluster_status)
        sample = Sample(
            t=round(now, 3),
            rate_in=round(rate_in, 2),
            rate_out=round(rate_out, 2),
            connections=snapshot.connections,
            latency_mean_ms=mean,
            latency_max_ms=max_ms,
            peer_queue=sum(peer.queue for peer in others),
            peers_down=sum(1 for peer in others if peer.state not in ("up", "unknown")),
            databases_healthy=healthy,
            databases_total=total,
            read_only=read_only,
            broker_queue=None if snapshot.broker is None else snapshot.broker.queue,
            broker_down=None if snapshot.broker is None else snapshot.broker.state == "down",
            latency_count=latency.count,
        )
        self._samples.append(sample)
        return sample

    def __iter__(self) -> Iterator[Sample]:
        """The samples kept, oldest first."""
        return iter(self._samples)

    def __len__(self) -> int:
        """How many samples are kept."""
        return len(self._samples)

    def columns(self) -> dict[str, list[Any]]:
        """Every sample kept, as one list per field (compact JSON for the page)."""
        return {name: [getattr(s, name) for s in self._samples] for name in SERIES}


def capacity_for(window_seconds: float, interval_seconds: float) -> int:
    """How many samples cover ``window_seconds`` at one every ``interval_seconds``."""
    return math.ceil(window_seconds / interval_seconds) + 1


def sample_fields(sample: Sample) -> dict[str, Any]:
    """One sample as a JSON-able dict (what each node-status message carries)."""
    return asdict(sample)


def _databases(
    cluster_status: ClusterStatusReading | None,
) -> tuple[int | None, int | None, bool | None]:
    """(healthy, monitored, read-only) from the cluster-status module's view."""
    if cluster_status is None:
        return None, None, None
    monitored = [db for db in cluster_status.databases if not db.disabled]
    healthy = sum(1 for db in monitored if db.health.healthy)
    return healthy, len(monitored), cluster_status.mode == "read-only"


def _slot_settings(interval: float) -> tuple[float, float]:
    """(slot width, seconds kept) for samples every ``interval`` seconds."""
    return interval / SLOTS_PER_INTERVAL, max(KEEP_INTERVALS * interval, KEEP_AT_LEAST)


def _bounded(capacity: int) -> int:
    return max(2, min(capacity, MAX_CAPACITY))
