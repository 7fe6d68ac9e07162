"""Aphlict's per-instance counters, in bounded memory.

Anyone who reaches the admin or client port can name a new instance, so at
most ``limits.max_instances`` are counted one by one (each is a series in
every per-instance metric), further ones together under
``OVERFLOW_INSTANCE``; and an instance without browsers that has been quiet
for as long as history keeps messages is forgotten, its counts added to
``OVERFLOW_INSTANCE`` so that the node's totals never go down. The hub
(``relay.core.hub``) says what happened; this decides where it is counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from relay.config import LimitsConfig
from relay.core.instances import DEFAULT_INSTANCE, OVERFLOW_INSTANCE

log = logging.getLogger("relay.hub")

#: Longer instance names are counted under ``OVERFLOW_INSTANCE``: no install names
#: its instances so, and each name counted is a label in several metrics.
MAX_COUNTED_NAME = 64
#: Instances counted for as long as the node runs, whatever they do.
_KEPT = frozenset({DEFAULT_INSTANCE, OVERFLOW_INSTANCE})


@dataclass(slots=True)
class InstanceCounters:
    """Aphlict's per-instance status counters."""

    clients_active: int = 0
    clients_total: int = 0
    messages_in: int = 0
    messages_out: int = 0
    #: When the instance last had a post, a message or a browser come or go (clock seconds).
    last_active: float = 0.0


class InstanceCounts:
    """The counters of every instance counted now, and the overflow label's."""

    def __init__(self, clock: Callable[[], float], limits: LimitsConfig) -> None:
        """Count with ``limits.max_instances``; ``clock`` gives monotonic seconds."""
        self._clock = clock
        self.limits = limits
        self._counters: dict[str, InstanceCounters] = {}
        #: Browsers counted under ``OVERFLOW_INSTANCE``, by the instance they named:
        #: that instance is not counted on its own while any of them is connected.
        self._overflow_browsers: Counter[str] = Counter()
        #: Posts, messages and browsers counted under ``OVERFLOW_INSTANCE`` because
        #: their instance could not be counted on its own.
        self.overflowed = 0

    def __iter__(self) -> Iterator[str]:
        """The instances counted now (the overflow label among them once used)."""
        return iter(self._counters)

    def get(self, instance: str) -> InstanceCounters | None:
        """The counters of ``instance`` if it is counted on its own now, unchanged."""
        return self._counters.get(instance)

    def of(self, instance: str) -> InstanceCounters:
        """The counters ``instance`` counts in now, marked active."""
        counters = self._counters.get(instance)
        if counters is None:
            counters = self._start_counting(instance)
        counters.last_active = self._clock()
        return counters

    def posted_in(self, instance: str) -> InstanceCounters:
        """Where a post to ``instance`` was counted: its own counters, or the overflow label's."""
        return self._counters.get(instance) or self._overflow()

    def browser_came(self, instance: str) -> None:
        """Count a browser of ``instance`` that completed its handshake."""
        counters = self.of(instance)
        if instance not in self._counters:
            self._overflow_browsers[instance] += 1
        counters.clients_active += 1
        counters.clients_total += 1

    def browser_left(self, instance: str) -> None:
        """Count a browser of ``instance`` gone.

        An instance that only browsers ever named (nothing was posted to it)
        is forgotten with its last browser: instance names come from URLs,
        and counters must not pile up for names anyone can invent.
        """
        if self._overflow_browsers[instance]:
            # Counted under the overflow label when it connected: leaves from there.
            self._overflow_browsers[instance] -= 1
            if not self._overflow_browsers[instance]:
                del self._overflow_browsers[instance]
            self._counters[OVERFLOW_INSTANCE].clients_active -= 1
            return
        counters = self.of(instance)
        counters.clients_active -= 1
        idle = not counters.clients_active and not counters.messages_in
        if idle and instance not in _KEPT:
            del self._counters[instance]

    def forget_idle(self, quiet_since: float) -> None:
        """Fold into the overflow label every instance with no browser, quiet since then."""
        idle = [
            instance
            for instance, counters in self._counters.items()
            if counters.last_active < quiet_since and not counters.clients_active
        ]
        for instance in idle:
            if instance not in _KEPT:
                self._fold(self._counters.pop(instance))

    def _start_counting(self, instance: str) -> InstanceCounters:
        """New counters for ``instance``, or the overflow label's when it may not have its own."""
        counted = len(self._counters) - (OVERFLOW_INSTANCE in self._counters)
        if instance == DEFAULT_INSTANCE or (
            counted < self.limits.max_instances
            and len(instance) <= MAX_COUNTED_NAME
            and instance != OVERFLOW_INSTANCE
            and instance not in self._overflow_browsers
        ):
            counters = self._counters[instance] = InstanceCounters()
            return counters
        if not self.overflowed:
            log.warning(
                "counting instances past limits.max_instances (%d), or with names over %d "
                'characters, together as "%s" (logged once; see relay_instances_overflow_total)',
                self.limits.max_instances,
                MAX_COUNTED_NAME,
                OVERFLOW_INSTANCE,
            )
        self.overflowed += 1
        return self._overflow()

    def _overflow(self) -> InstanceCounters:
        counters = self._counters.get(OVERFLOW_INSTANCE)
        if counters is None:
            counters = self._counters[OVERFLOW_INSTANCE] = InstanceCounters()
        return counters

    def _fold(self, counters: InstanceCounters) -> None:
        """Add a forgotten instance's counts to the overflow label's."""
        into = self._overflow()
        into.clients_total += counters.clients_total
        into.messages_in += counters.messages_in
        into.messages_out += counters.messages_out
