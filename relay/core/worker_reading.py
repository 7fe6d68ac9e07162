"""What one worker of a multi-process node tells its siblings, and the node they add up to.

A worker's ``WorkerReading`` is its own ``NodeSnapshot`` plus what only the
node's view needs from it (its slot, its pid, its delivery latencies, and
those of the last few seconds for the charts, ``relay.core.latency_slots``). The
siblings exchange these as records (``relay.links.worker_wire``) and
``relay.core.add_up`` sums them into a ``NodeView``, which ``/status/``,
``/metrics`` and the status page of a ``--workers`` node read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.core.latency_slots import LatencySlot
from relay.core.snapshot import NodeSnapshot

#: A worker's state in the ``workers`` list.
SERVING = "serving"
#: It did not answer in time (restarting, say): left out of the sums.
NOT_ANSWERING = "not answering"
#: It answered with a record this worker cannot read: left out of the sums.
UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class LatencyReading:
    """A delivery-latency histogram: cumulative counts per upper bound, and the sum.

    ``bounds`` are the finite upper bounds in seconds, ascending; ``counts``
    has one more entry (the ``+Inf`` bucket, i.e. every observation).
    """

    bounds: tuple[float, ...] = ()
    counts: tuple[int, ...] = (0,)
    #: Seconds, over every observation.
    total: float = 0.0

    @property
    def count(self) -> int:
        """Observations in all."""
        return self.counts[-1]


@dataclass(frozen=True, slots=True)
class WorkerReading:
    """One worker's own figures, as it sends them to its siblings."""

    #: The worker's slot (0 to workers - 1).
    index: int
    pid: int
    #: Times the supervisor restarted this slot's worker.
    restarts: int
    #: The worker's own snapshot. The cluster-status reading and the ``nodes``
    #: section are not exchanged (every worker reads the same Redis and
    #: databases): the answering worker's own stand for the node.
    snapshot: NodeSnapshot
    latency: LatencyReading = LatencyReading()
    #: The charts' latencies of its last seconds (posts that reached a browser), finished slots.
    recent: tuple[LatencySlot, ...] = ()
    #: The relay version the worker runs ("" from a worker too old to say): after an
    #: upgrade of the workers (SIGUSR2 to the supervisor) each shows the new one.
    version: str = ""

    def entry(self) -> dict[str, Any]:
        """This worker in the ``workers`` list of ``/status/``."""
        snapshot = self.snapshot
        readings = snapshot.instances.values()
        return {
            "index": self.index,
            "pid": self.pid,
            "restarts": self.restarts,
            "version": self.version,
            "fingerprint": snapshot.fingerprint,
            "connections": snapshot.connections,
            "messages_in": sum(reading.messages_in for reading in readings),
            "messages_out": sum(reading.messages_out for reading in readings),
            "uptime": snapshot.uptime_ms,
            "state": SERVING,
        }


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """One worker slot as the answering worker found it: its reading, or why there is none."""

    index: int
    #: ``SERVING``, ``NOT_ANSWERING`` or ``UNREADABLE``.
    state: str
    #: The worker's reading; None unless it is serving.
    reading: WorkerReading | None = None

    def entry(self) -> dict[str, Any]:
        """The slot in the ``workers`` list of ``/status/``."""
        if self.reading is None:
            return {"index": self.index, "state": self.state}
        return self.reading.entry()


@dataclass(frozen=True, slots=True)
class NodeView:
    """A multi-process node's figures: its workers' readings added up."""

    snapshot: NodeSnapshot
    latency: LatencyReading
    #: Every worker slot, in index order.
    workers: Sequence[WorkerSlot]
    #: The other serving workers' recent latency slots by fingerprint, for the charts.
    sibling_latencies: Mapping[str, tuple[LatencySlot, ...]] = field(default_factory=dict)

    @property
    def answering(self) -> int:
        """Workers whose figures are in the sums."""
        return sum(1 for slot in self.workers if slot.reading is not None)

    def status(self, instance: str) -> dict[str, Any]:
        """``GET /status/`` of the node: the summed snapshot's, plus the ``workers`` list."""
        status = self.snapshot.status(instance)
        status["workers"] = [slot.entry() for slot in self.workers]
        return status
