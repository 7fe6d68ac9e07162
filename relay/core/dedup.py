"""Remembering which messages a node has already handled, for a while, in bounded memory.

In a full mesh a message reaches a node along several paths; this is what
lets the node deliver it once. Time is injected.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable


class RecentIds:
    """Identities seen in the last ``window`` seconds, at most ``capacity`` of them."""

    def __init__(self, window: float, capacity: int, clock: Callable[[], float]) -> None:
        """Remember each identity ``window`` seconds, forgetting the oldest past ``capacity``."""
        self._window = window
        self._capacity = capacity
        self._clock = clock
        self._seen: OrderedDict[Hashable, float] = OrderedDict()

    def set_window(self, window: float) -> None:
        """Remember identities this long from now on (a config reload)."""
        self._window = window

    def first_sighting(self, identity: Hashable) -> bool:
        """Record ``identity``; True the first time within the window, False for a repeat."""
        now = self._clock()
        self._expire(now)
        if identity in self._seen:
            return False
        self._seen[identity] = now
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True

    def __len__(self) -> int:
        """How many identities are remembered now."""
        return len(self._seen)

    def _expire(self, now: float) -> None:
        cutoff = now - self._window
        seen = self._seen
        while seen:
            oldest = next(iter(seen))
            if seen[oldest] >= cutoff:
                break
            seen.popitem(last=False)
