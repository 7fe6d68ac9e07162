"""Which nodes joined the cluster and which left it, as one node's presence readings say. No I/O.

A node is known by its **place**: the host and admin port it announces
(``web1:22281``), which a restart keeps, whereas its pid and fingerprint
change. :class:`Turnover` is shown, at each look, the places present now
(fresh or stale, this node's own left out):

- the places present within ``settle`` seconds of the first look are the
  cluster as this node found it (broker mode reads every node at once, so 0;
  mesh mode hears each peer within an interval or so);
- a place first seen later **joined**, and stays listed as joined: a
  newcomer is told once, not again when it comes back after leaving;
- a known place not present now has **left**, until it is present again.

Alerts (``relay.core.alerts``) turn each joined place into one notice and
each left one into an episode; the lists stay the same while nothing
changes, so every node of the cluster follows them alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

#: Places remembered at most: a cluster whose nodes come and go on new ports
#: forever would otherwise grow this without bound (the oldest is forgotten).
MAX_PLACES = 1000


class Turnover:
    """The places that joined since this node's first look, and those that left."""

    def __init__(self, clock: Callable[[], float], settle: float) -> None:
        """Time with ``clock``; places seen within ``settle`` s of the first look are known."""
        self._clock = clock
        self._settle = settle
        self._started: float | None = None
        #: Every place seen, in the order first seen; True for a newcomer.
        self._known: dict[str, bool] = {}
        self._present: frozenset[str] = frozenset()

    def look(self, present: Iterable[str]) -> None:
        """The places present now (this node's own left out)."""
        now = self._clock()
        if self._started is None:
            self._started = now
        newcomer = now - self._started > self._settle
        self._present = frozenset(present)
        for place in sorted(self._present):
            if place not in self._known:
                self._known[place] = newcomer
        while len(self._known) > MAX_PLACES:
            del self._known[next(iter(self._known))]

    def joined(self) -> list[str]:
        """Places that came after this node found the cluster, present or not."""
        return sorted(place for place, newcomer in self._known.items() if newcomer)

    def left(self) -> list[str]:
        """Known places not present at the last look."""
        return sorted(place for place in self._known if place not in self._present)
