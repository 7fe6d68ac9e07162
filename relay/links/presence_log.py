"""The INFO lines presence writes: how many other nodes a node found, then who comes and goes.

Shared by broker mode (``relay.broker.presence``: under a prefix) and mesh
mode (``relay.peering.presence``: among the peers). No I/O but the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

#: How many other nodes the first line names before it only counts.
NAMED_IN_LOG = 5


class PresenceLog:
    """Logs the first reading of the other nodes, then each node that joins or leaves."""

    def __init__(self, log: logging.Logger, *, found_in: str, joined: str, left: str) -> None:
        """Log on ``log``; the phrases say where: ``"under broker prefix 'relay'"``..."""
        self._log = log
        self._found_in = found_in
        self._joined = joined
        self._left = left
        self._known: set[str] | None = None

    def seen(self, others: Iterable[str]) -> None:
        """The other nodes (by node name) in the latest reading."""
        now = set(others)
        if self._known is None:
            self._first(sorted(now))
        else:
            for node in sorted(now - self._known):
                self._log.info("presence: node %s joined %s", node, self._joined)
            for node in sorted(self._known - now):
                self._log.info("presence: node %s left %s", node, self._left)
        self._known = now

    def _first(self, named: list[str]) -> None:
        if not named:
            self._log.info("presence: no other node %s", self._found_in)
            return
        more = len(named) - NAMED_IN_LOG
        self._log.info(
            "presence: %d other %s %s: %s%s",
            len(named),
            "node" if len(named) == 1 else "nodes",
            self._found_in,
            ", ".join(named[:NAMED_IN_LOG]),
            f" and {more} more" if more > 0 else "",
        )
