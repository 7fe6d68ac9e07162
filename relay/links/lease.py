"""The cluster-status lease's decisions: take, renew, lose, and whose verdicts count.

Pure; the clock is injected and Redis is someone else's (``relay.broker.status_lease``).
One node per cluster holds the lease and runs the checks. The lease is a
Redis key set with ``NX PX ttl``; its holder extends it every ``ttl / 3``
by a compare-and-extend, and every other node tries to take it as often.
Each take draws a *fencing token* (Redis ``INCR``), larger than any before
(a lost counter starts again from Redis' clock: ``lease_wire.TAKE_SCRIPT``).

Safety: the holder counts the lease as its own only until ``ttl`` after it
*sent* the last command that set or extended it (Redis' copy cannot expire
earlier), so a holder cut off from Redis stops checking by the time another
can take over. A verdict carries its holder's token and a node keeps only
verdicts whose token is at least the highest it has seen (``Fence``), so a
stale holder's late verdict is ignored.

Takeover: after a holder dies its key lives at most ``ttl`` more; the others
try every ``ttl / 3``, so one holds the lease at most ``4/3 * ttl`` after the
holder's last renewal.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

__all__ = ["Fence", "Lease", "LeaseAction", "LeaseChange"]


class LeaseAction(enum.Enum):
    """What the node should ask Redis for on its next round."""

    TAKE = "take"
    RENEW = "renew"


class LeaseChange(enum.Enum):
    """A change of holder, as seen by this node."""

    ACQUIRED = "acquired"
    LOST = "lost"


class Lease:
    """One node's side of the lease: whether it holds it, with which token, until when."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        """A lease of ``ttl`` seconds, timed by ``clock`` (monotonic seconds).

        Raises:
            ValueError: ``ttl`` is not positive.
        """
        if ttl <= 0:
            raise ValueError("a lease needs a positive ttl")
        self.ttl = ttl
        self._clock = clock
        self.token: int | None = None
        self._valid_until = 0.0
        #: True after this node lost the lease because Redis stopped answering
        #: (not because another took it): it still speaks for the cluster about
        #: that outage, since no other node can.
        self.lost_to_outage = False

    @property
    def interval(self) -> float:
        """Seconds between rounds: renewals by the holder, attempts by the others."""
        return self.ttl / 3

    @property
    def holding(self) -> bool:
        """Whether this node holds the lease now (see ``expire`` for the loss event)."""
        return self.token is not None and self._clock() < self._valid_until

    def remaining(self) -> float | None:
        """Seconds the lease held has left unrenewed (at least 0), None when not held."""
        if self.token is None:
            return None
        return max(0.0, self._valid_until - self._clock())

    def action(self) -> LeaseAction:
        """Renew a lease held, else try to take it."""
        return LeaseAction.RENEW if self.token is not None else LeaseAction.TAKE

    def took(self, token: int, sent_at: float) -> LeaseChange:
        """Redis gave the lease, with ``token``, to a command sent at ``sent_at``."""
        self.token = token
        self._valid_until = sent_at + self.ttl
        self.lost_to_outage = False
        return LeaseChange.ACQUIRED

    def refused(self) -> LeaseChange | None:
        """Another node holds the lease (a take or a renewal was refused)."""
        self.lost_to_outage = False
        return self._drop()

    def renewed(self, sent_at: float) -> None:
        """Redis extended the lease by a command sent at ``sent_at``."""
        if self.token is not None:
            self._valid_until = sent_at + self.ttl

    def failed(self) -> LeaseChange | None:
        """A round got no answer from Redis: the lease lapses once its time is up."""
        change = self.expire()
        if change is not None:
            self.lost_to_outage = True
        return change

    def expire(self) -> LeaseChange | None:
        """LOST if the lease held ran out unrenewed (Redis may give it to another now)."""
        if self.token is not None and self._clock() >= self._valid_until:
            return self._drop()
        return None

    def released(self) -> LeaseChange | None:
        """This node gave the lease up (it stops)."""
        self.lost_to_outage = False
        return self._drop()

    def _drop(self) -> LeaseChange | None:
        if self.token is None:
            return None
        self.token = None
        self._valid_until = 0.0
        return LeaseChange.LOST


class Fence:
    """Admits verdicts by fencing token: never one older than the newest holder's."""

    def __init__(self) -> None:
        """Start having seen no token."""
        self.highest = 0

    def admit(self, token: int) -> bool:
        """Whether a verdict with ``token`` counts; remembers the highest token seen."""
        if token < self.highest:
            return False
        self.highest = token
        return True
