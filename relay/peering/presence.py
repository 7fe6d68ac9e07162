"""Presence in mesh mode: each node announces itself to its peers, and lists who announced.

Without a broker there is no shared store to announce in, so every
``peering.presence_interval_seconds`` (I) a node POSTs its record (the
record broker mode stores in Redis, ``relay.links.presence``) to each peer's
admin port at ``/peer/presence``, on the peer link's own session (the shared
secret and TLS settings of its posts). The receiver keeps it in its
:class:`Roster`, aged on the receiver's own clock from the moment it
arrived, since two hosts' clocks need not agree: a healthy peer's record is
at most about one interval old, so the bounds of broker mode hold (stale
after 2.5 I, gone after 4 I). A peer that is down, or an Aphlict node
(which answers 404), costs one failed POST per interval, never a message.
Two intervals after its start a node logs how many other nodes it heard
from, then each that joins or leaves (INFO), as in broker mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from relay.core.snapshot import NodeSnapshot
from relay.links.presence import GONE_AFTER, Announcement, Identity, Rates, announcement
from relay.links.presence_log import PresenceLog
from relay.links.roster import Roster
from relay.peering.peers import PeerLink, PeerSet
from relay.process.periodic import every

log = logging.getLogger("relay.peers.presence")

#: Intervals after its start a node first logs how many peers it heard from.
LOG_AFTER = 2


class MeshPresence:
    """This node's presence among its peers, and what it heard of theirs."""

    def __init__(
        self,
        peers: PeerSet,
        interval: float,
        fingerprint: str,
        *,
        snapshot: Callable[[], NodeSnapshot],
        address: Callable[[], str],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Announce ``snapshot()`` of the node ``fingerprint`` to ``peers`` every ``interval`` s.

        ``address()`` is where the node is (``host:admin port``).
        """
        self.identity = Identity.of_this_process(
            fingerprint, worker=None, interval=interval, started_at=wall_clock()
        )
        self._peers = peers
        self._snapshot = snapshot
        self._address = address
        self._clock = clock
        self._rates = Rates(clock)
        self._started: float | None = None
        self._changes = PresenceLog(log, found_in="in the mesh", joined="the mesh", left="the mesh")
        # A node hears every peer within an interval of its start: those are no news.
        self.roster = Roster(self.identity, None, clock, GONE_AFTER * interval)
        self._task: asyncio.Task[None] | None = None
        self._failing: dict[str, str] = {}
        #: The announcement under way to each peer, by link name.
        self._sending: dict[str, asyncio.Task[None]] = {}

    def status(self) -> dict[str, Any]:
        """The ``nodes`` entry of ``/status/``."""
        return self.roster.status()

    def heard(self, found: Announcement) -> None:
        """A peer's record, just POSTed to this node."""
        self.roster.heard(found)

    async def start(self) -> None:
        """Announce from now on, in the background (the first round at once)."""
        self._started = self._clock()
        self._task = asyncio.create_task(
            every(
                lambda: self.identity.interval,
                self._round,
                doing="announcing this node to its peers",
                log=log,
                first_now=True,
            ),
            name="relay-mesh-presence",
        )

    async def stop(self) -> None:
        """Stop announcing; the peers see this node turn stale, then gone."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        sending = list(self._sending.values())
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)

    def _round(self) -> None:
        """Hear this node's own record, and send it to every peer (in the background)."""
        record = announcement(self._snapshot(), self.identity, self._rates, self._address())
        self.roster.heard(record)
        # Every live peer is heard within an interval or so: then say who is there.
        started = self._clock() if self._started is None else self._started
        if self._clock() - started >= LOG_AFTER * self.identity.interval:
            self._changes.seen(self.roster.others())
        body = record.encode()
        for link in self._peers.links:
            # One POST per peer at a time: a slow peer's is bounded by the link's timeout.
            if link.name in self._sending:
                continue
            task = asyncio.create_task(self._send(link, body), name="relay-mesh-presence-post")
            self._sending[link.name] = task
            task.add_done_callback(functools.partial(self._sent, link.name))

    def _sent(self, name: str, task: asyncio.Task[None]) -> None:
        """The announcement to ``name`` is over: the next round may send another."""
        if self._sending.get(name) is task:
            del self._sending[name]

    async def _send(self, link: PeerLink, body: bytes) -> None:
        """Send one announcement; log a peer that stops taking them, once (DEBUG)."""
        problem = await link.announce(body)
        before = self._failing.pop(link.name, None)
        if problem is not None:
            self._failing[link.name] = problem
            if before is None and log.isEnabledFor(logging.DEBUG):
                log.debug("peer %s did not take this node's presence: %s", link.name, problem)
