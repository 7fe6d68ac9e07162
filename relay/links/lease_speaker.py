"""What a node sends of the alerts when a flag says whether it speaks for the cluster. No I/O.

In broker mode with ``cluster_status`` the holder of the cluster-status
lease speaks for the cluster (``relay.broker.status_lease``); without the
lease every node speaks for itself. Every node follows every episode
(``relay.observe.alerts``), so a node taking the lease over sends the end of
an episode its predecessor began: the verdicts reach every node alike.

An outage of Redis (``SEEN_ALONE``) is different: each node sees it through
its own link, and while it lasts no node can hear another, so none can
follow what another sent. :class:`LeaseSpeaker` gives each such episode to
one node, the one that told its start:

- a node tells the start if it speaks at the look that sees it;
- that node tells the end, whether it still speaks or not (after an outage
  longer than the lease, another node may hold the lease by then);
- a node that did not tell the start never tells the end.

So an outage is one start and one end from one node, and never an end
without its start. Limits: an outage whose teller dies before it ends has
no end; one that no speaking node saw (Redis back within a look) is not
told. And one that begins while two nodes speak, in the moments after an
earlier outage (the old holder, which lost the lease to it, speaks until
Redis answers it again; the new one holds the lease) is told by both: told
twice rather than not at all, as it would be if a node that has just taken
the lease left it to a predecessor that may have stopped.
"""

from __future__ import annotations

from collections.abc import Iterable

from relay.core.alerts import AlertEvent

__all__ = ["SEEN_ALONE", "LeaseSpeaker"]

#: Kinds each node sees through its own link, that no other node can follow as they happen.
SEEN_ALONE = frozenset({"broker-lost"})


class LeaseSpeaker:
    """This node's part in broker mode's alerts: what to send of each look's episodes."""

    def __init__(self) -> None:
        """Start having told nothing."""
        #: The keys of the ``SEEN_ALONE`` episodes whose start this node told.
        self._told: set[str] = set()

    def look(self, speaks: bool, events: Iterable[AlertEvent]) -> list[AlertEvent]:
        """The events to send of ``events``, given whether this node ``speaks`` for the cluster."""
        chosen = []
        for event in events:
            key = event.problem.key
            if event.problem.kind not in SEEN_ALONE:
                if speaks:
                    chosen.append(event)
            elif event.state != "firing":
                if key in self._told:
                    self._told.discard(key)
                    chosen.append(event)
            elif speaks:
                self._told.add(key)
                chosen.append(event)
        return chosen
