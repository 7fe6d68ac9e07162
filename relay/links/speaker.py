"""Which node of a mesh sends the cluster's alerts, and what it owes when it takes over. No I/O.

A mesh has no broker, so no lease says who speaks for the cluster. Every
node keeps the same presence roster (``relay.links.presence``), so every
node can pick the same one: **the oldest node present** (the smallest
announced ``started_at``, then the smallest place). Oldest rather than
smallest place so that a node coming back (a restart makes it the youngest)
takes nothing over: the sender changes only when the sender leaves.
``started_at`` is compared as announced, never with a local clock, so every
node ranks the members alike whatever the hosts' clocks say.

:class:`MeshSpeaker` is shown, at each look, the roster's members and the
episodes that began or ended (``relay.core.alerts``), and says which to send:

- a node sends nothing in its first ``settle`` seconds (it has not heard
  every peer yet, and may not be the oldest), and holds back what it sees;
- a node that is not the sender holds back what it sees (every node follows
  every episode, ``relay.observe.alerts``), keeping it with the time seen;
- a departed sender stays the sender until its presence is gone (the look
  at which the others see it leave), so the node taking over sends the
  ``node-left`` of its predecessor itself;
- on taking over, a node sends what it held back **after the last sender
  was last heard from**: that one was alive then and sent the rest (an
  episode's start before, its end after, are sent as such). A sender
  counts only once heard after it took over: one that died first (two
  nodes gone one after the other) sent nothing, so the cut stays where its
  own predecessor was last heard. A node that was the oldest all along (at
  its start, or alone) sends all it held back.

``peer-down`` is not a cluster-wide alert: a peer link is seen only from
its two ends, and a link down between two other nodes (one node's posts no
longer reaching another) would be told by no one if one node spoke for
all. Each node sends the episodes of its own links (``PER_LINK``).

Limits: during a partition each side has its own sender (each tells what it
sees, the other side leaving); nodes see a sender leave up to a presence
interval apart, so an event within about one interval of a sender's death
or take-over may be sent twice, or not at all; what every node saw in its
first ``settle`` seconds is lost if the oldest dies before it settles; an
episode that only the departed sender saw (and no other node follows) has
no end; a host whose clock is far behind makes its node the oldest when it
starts, which then re-sends the episodes open at its start.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relay.core.alerts import AlertEvent

__all__ = ["PER_LINK", "Member", "MeshSpeaker", "members_of", "sender"]

#: Kinds each node sends for itself: what one node's links are.
PER_LINK = frozenset({"peer-down"})
#: Events held back at most (the oldest forgotten first).
MAX_HELD = 1000


@dataclass(frozen=True, slots=True)
class Member:
    """One node of the roster as the choice of the sender needs it."""

    place: str
    #: Unix time its process started, as it announced it.
    started_at: float
    is_self: bool
    #: Seconds since it was last heard from, on this node's clock.
    age: float


def members_of(rows: Iterable[Mapping[str, Any]]) -> list[Member]:
    """The roster's member rows (``Roster.members``) as :class:`Member`."""
    return [
        Member(
            place=str(row["place"]),
            started_at=float(row["started_at"]),
            is_self=bool(row["self"]),
            age=float(row["last_seen_seconds"]),
        )
        for row in rows
    ]


def sender(members: Iterable[Member]) -> Member | None:
    """The member that sends the cluster's alerts: the oldest, then the smallest place."""
    return min(members, key=lambda m: (m.started_at, m.place, not m.is_self), default=None)


class MeshSpeaker:
    """This node's part in a mesh's alerts: what to send of each look's episodes."""

    def __init__(self, clock: Callable[[], float], settle: float) -> None:
        """Time with ``clock``; send nothing within ``settle`` s of the first look."""
        self._clock = clock
        self._settle = settle
        self._first: float | None = None
        self._speaking = False
        #: The sender at the last look, and since when (clock time; -inf: before this node).
        self._sender: str | None = None
        self._sender_is_self = False
        self._since = -math.inf
        #: Everything up to this time (clock) was sent, by the senders this node followed.
        self._covered = -math.inf
        #: Cluster-wide events held back while another node sends, with when they came.
        self._held: collections.deque[tuple[float, AlertEvent]] = collections.deque(maxlen=MAX_HELD)

    @property
    def speaking(self) -> bool:
        """Whether this node sent the cluster's alerts at the last look."""
        return self._speaking

    def look(self, members: Sequence[Member], events: Iterable[AlertEvent]) -> list[AlertEvent]:
        """The events to send now, given the roster's ``members`` and this look's ``events``."""
        now = self._clock()
        if self._first is None:
            self._first = now
        own: list[AlertEvent] = []
        shared: list[AlertEvent] = []
        for event in events:
            (own if event.problem.kind in PER_LINK else shared).append(event)
        chosen = sender(members)
        speaks = chosen is not None and chosen.is_self and now - self._first >= self._settle
        self._follow(chosen, now)
        if not speaks:
            self._held.extend((now, event) for event in shared)
            self._speaking = False
            return own
        # Taking over: what came after the last sender spoke is this node's to send.
        owed = [event for at, event in self._held if at > self._covered]
        self._held.clear()
        self._covered = now
        self._speaking = True
        return owed + shared + own

    def _follow(self, chosen: Member | None, now: float) -> None:
        """Follow who sends, and how far what it sent goes.

        Another sender has sent everything up to when it was last heard,
        provided it was heard since it became the sender (it lived to take
        over). A sender found at this node's start, or after this node only
        waited to settle, was sending before: it is trusted from the first.
        """
        if chosen is None:
            return
        if chosen.place != self._sender:
            # Was the sender replaced in charge? Another node was; this one, if it spoke.
            replaced = self._sender is not None and (self._speaking or not self._sender_is_self)
            self._since = now if replaced else -math.inf
            self._sender = chosen.place
            self._sender_is_self = chosen.is_self
        if not chosen.is_self:
            heard = now - chosen.age
            if heard >= self._since:
                self._covered = max(self._covered, heard)
