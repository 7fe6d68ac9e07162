"""Delivery latencies in short time slots, so that a node's workers can add theirs up. No I/O.

The status page charts, per sample interval, the mean and the highest
latency of the posts that reached a browser. Under ``--workers`` each worker
times the posts it took, and the worker that samples the node must add up
every worker's. A mean and a maximum add up exactly from (count, sum, max),
never from the workers' means; but each worker samples on its own timer,
so there is no common interval to hand over. Instead each worker keeps its
latencies in slots of ``width`` seconds on its monotonic clock and sends
its **finished** slots of the last ``keep`` seconds with its reading; a
sampler (:class:`SiblingLatencies`) remembers, for each sibling, the end of
the last slot it counted, and counts the newer ones. So each slot is counted
once, whole, at most ``width`` seconds after it ended, even when a sibling
missed a round (as long as ``keep`` covers it: ``keep`` must exceed the
sampling interval). Slot ends are compared only with the same sibling's.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

__all__ = ["LatencySlot", "LatencySlots", "LatencyTotal", "SiblingLatencies"]

#: Siblings remembered at most (a restarted worker is a new one; the oldest is forgotten).
MAX_SIBLINGS = 256


@dataclass(frozen=True, slots=True)
class LatencySlot:
    """The posts timed in one slot: when it ends (clock seconds), how many, their sum and max."""

    end: float
    count: int
    #: Seconds.
    total: float
    maximum: float


@dataclass(frozen=True, slots=True)
class LatencyTotal:
    """Latencies added up: how many, their sum and their maximum (seconds)."""

    count: int = 0
    total: float = 0.0
    maximum: float = 0.0

    def plus(self, count: int, total: float, maximum: float) -> LatencyTotal:
        """This total and ``count`` more latencies (their sum ``total``, largest ``maximum``)."""
        if not count:
            return self
        return LatencyTotal(self.count + count, self.total + total, max(self.maximum, maximum))


class LatencySlots:
    """One process' latencies of the last ``keep`` seconds, in slots of ``width`` seconds."""

    def __init__(self, clock: Callable[[], float], width: float, keep: float) -> None:
        """Time with ``clock`` (the host's monotonic clock, shared by its processes)."""
        self._clock = clock
        self._width = width
        self._keep = keep
        #: (slot number, count, sum, max), oldest first; slot n ends at (n + 1) * width.
        self._slots: deque[list[float]] = deque()

    def configure(self, width: float, keep: float) -> None:
        """New slot settings from now on; the slots kept so far are dropped."""
        self._width, self._keep = width, keep
        self._slots.clear()

    def observe(self, seconds: float) -> None:
        """Count one latency in the current slot."""
        number = math.floor(self._clock() / self._width)
        if self._slots and self._slots[-1][0] == number:
            slot = self._slots[-1]
            slot[1] += 1
            slot[2] += seconds
            slot[3] = max(slot[3], seconds)
        else:
            self._slots.append([number, 1, seconds, seconds])
        self._forget()

    def recent(self) -> tuple[LatencySlot, ...]:
        """The finished slots kept, oldest first (the current one may still grow)."""
        self._forget()
        now = self._clock()
        width = self._width
        return tuple(
            LatencySlot((number + 1) * width, int(count), total, maximum)
            for number, count, total, maximum in self._slots
            if (number + 1) * width <= now
        )

    def _forget(self) -> None:
        oldest = math.floor((self._clock() - self._keep) / self._width)
        while self._slots and self._slots[0][0] < oldest:
            self._slots.popleft()


class SiblingLatencies:
    """The slots a sampler has counted of each sibling: each sibling's newer ones are new."""

    def __init__(self) -> None:
        """Nothing counted yet: a sibling's first slots all count."""
        #: By sibling: the end of the last slot counted.
        self._counted: dict[str, float] = {}

    def take(self, by_sibling: Mapping[str, Iterable[LatencySlot]]) -> LatencyTotal:
        """The slots not counted yet, of every sibling in ``by_sibling``, added up."""
        total = LatencyTotal()
        for sibling, slots in by_sibling.items():
            counted = self._counted.pop(sibling, -math.inf)
            newest = counted
            for slot in slots:
                if slot.end > counted:
                    total = total.plus(slot.count, slot.total, slot.maximum)
                    newest = max(newest, slot.end)
            self._counted[sibling] = newest  # re-inserted: the most recently heard last
        while len(self._counted) > MAX_SIBLINGS:
            del self._counted[next(iter(self._counted))]
        return total
