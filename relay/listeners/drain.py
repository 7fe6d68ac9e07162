"""The graceful drain: closing a node's browsers spread over a window, not all at once.

Phorge's client reconnects at once after a connection that had worked, and
its workboards and chat reload their data on every reconnect; closing every
browser in the same instant would send a node's whole population to the
other nodes and to the web tier in the same second. So on shutdown the node
closes its browsers (1001, going away) at an even pace over the drain window,
with a floor on the pace so that a node with few browsers does not linger.

``DrainPlan`` is the pure schedule (tested with plain numbers); ``drain``
carries it out on the event loop's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("relay.drain")

#: Shortest pause between two rounds of closes: more closes are batched into one
#: round rather than scheduled one timer each (a node may hold 100,000 browsers).
TICK = 0.01


class Leaving(Protocol):
    """A connection that can be asked to go away."""

    def going_away(self) -> None:
        """Close with 1001 so the browser reconnects (elsewhere, now)."""


@dataclass(frozen=True, slots=True)
class DrainPlan:
    """When each of ``count`` browsers is closed: evenly over ``duration`` seconds."""

    count: int
    duration: float

    @classmethod
    def spread(cls, count: int, window: float, min_rate: float) -> DrainPlan:
        """Close ``count`` browsers within ``window`` seconds, at least ``min_rate`` a second.

        The pace is ``count / window``, but never below ``min_rate``: 50
        browsers at 100 a second take half a second, not the whole window.
        """
        if count <= 0 or window <= 0:
            return cls(max(count, 0), 0.0)
        return cls(count, min(window, count / min_rate))

    def due(self, elapsed: float) -> int:
        """How many browsers should be closed ``elapsed`` seconds into the drain.

        The first is closed at once, the last ``duration / count`` before the end.
        """
        if elapsed >= self.duration:
            return self.count
        return min(self.count, 1 + int(self.count * max(elapsed, 0.0) / self.duration))

    def next_at(self, closed: int) -> float:
        """Seconds into the drain when the next one after ``closed`` is due."""
        return closed * self.duration / self.count if self.count else 0.0


async def drain(
    connections: Sequence[Leaving],
    plan: DrainPlan,
    *,
    hurry: asyncio.Event,
) -> None:
    """Ask each of ``connections`` to go away, on ``plan``'s schedule.

    Setting ``hurry`` (a second SIGTERM) closes all that remain at once.
    Returns once every connection has been asked; their closing handshakes
    may still be under way.
    """
    assert plan.count == len(connections)
    clock = asyncio.get_running_loop().time
    started = clock()
    closed = 0
    while closed < plan.count:
        due = plan.count if hurry.is_set() else plan.due(clock() - started)
        for connection in connections[closed:due]:
            try:
                connection.going_away()
            except Exception:
                # One connection's failure must not stop the node from stopping.
                log.exception("closing a browser during the drain failed")
        closed = max(closed, due)
        if closed < plan.count:
            pause = max(TICK, started + plan.next_at(closed) - clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await hurry.wait()
