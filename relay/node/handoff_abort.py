"""The old process' side of a failed handoff: take back from the successor, then serve again.

The old process gives up (``relay.node.handoff``) when its successor exits,
stalls or sends garbage. It may then serve again only what the successor
can no longer serve, or both would read and write the same browser sockets
(split frames, duplicate or lost messages). That is more than a theory: a
successor whose ``ADOPTED`` is in flight when the old process' wait for it
times out already serves the batch the old one believes it still holds. So
the old process resumes nothing and accepts on nothing until it *knows*
(:func:`take_back`):

1. it says ``ABORT``, naming the batches whose acknowledgement it has not
   read (those it means to serve again);
2. it waits, at most ``RELEASE_SECONDS``, for the successor's ``RELEASED``:
   the successor has dropped its descriptors of those batches and exits
   without serving (``relay.node.handoff_take``); a late ``ADOPTED`` or
   ``DONE`` read meanwhile changes nothing, the ``ABORT`` is on its way.
   ``RELEASED`` also carries the subscriptions that browsers changed while
   the successor served them, which they are resumed with, and the
   connections it could not serve;
3. without that answer (the channel ended, or the successor hangs) only the
   process table can tell: a successor that has exited holds nothing (its
   pid, from the channel's peer credentials, is watched through a pidfd
   opened as the handoff begins, so a reused pid is never taken for it);
   one that lives but does not answer is killed (SIGKILL through the pidfd)
   and waited for.

Only then are the batches resumed (what they missed is replayed from
history: from their cut, or, for each connection the successor served,
from the moment forwarding stopped, since it delivered every message
forwarded after the batch) and the listening sockets kept in spare
accepted on again (:func:`give_up`). The alternative, resuming at once and counting on the
``ABORT`` to stop the successor, leaves both serving until the successor
reads it, which for a stalled process is any time. A hung successor costs
the browsers it had adopted (the kernel closes their sockets with it; they
reconnect here and replay), never a socket served twice. A process without
pidfds (Linux before 5.3) cannot know; it serves again after the wait and
says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from relay.links.handoff_wire import (
    ConnectionState,
    HandoffError,
    Kind,
    Place,
    abort_body,
    released_keys,
    released_of,
    released_unadopted,
)
from relay.listeners.handoff import Channel
from relay.listeners.movable import MovableConnection, unhold_all
from relay.node.admin_listeners import WaitingConnection
from relay.node.node import Node
from relay.process.peer_process import WatchedProcess

log = logging.getLogger("relay.handoff")

#: How long the old process waits for ``RELEASED`` (or the successor's exit) before killing it.
RELEASE_SECONDS = 10.0
#: How long a killed successor may take to be seen exited.
KILLED_SECONDS = 5.0


@dataclass
class Moving:
    """The old process' side of one handoff: what it must undo if the successor fails."""

    node: Node
    channel: Channel
    #: The successor's process, watched from the start (``watch``).
    successor: WatchedProcess | None = None
    #: Duplicates of the listening sockets, kept to accept again after a failure.
    spare_clients: list[socket.socket] = field(default_factory=list)
    spare_admin: list[socket.socket] = field(default_factory=list)
    #: Duplicates of the admin connections taken out before any request came, likewise.
    spare_waiting: list[WaitingConnection] = field(default_factory=list)
    #: Batch number -> its connections, cut but not acknowledged yet.
    pending: dict[int, list[tuple[MovableConnection, ConnectionState]]] = field(
        default_factory=dict
    )
    cut_at: dict[int, float] = field(default_factory=dict)
    #: When this process stopped forwarding what it routes (None: not yet).
    forwarded_until: float | None = None
    #: What ``RELEASED`` said: the batches the successor served until then, the
    #: connections of those it could not serve, and the subscriptions changed there.
    served_there: set[int] = field(default_factory=set)
    unadopted: set[Place] = field(default_factory=set)
    keys_changed: dict[Place, tuple[str, ...]] = field(default_factory=dict)
    batches_sent: int = 0
    moved: int = 0
    #: Whether the successor takes connections with bytes owed (its HELLO says so).
    takes_owed: bool = False
    #: The pidfile the successor writes once the handoff is done (its HELLO says which).
    successor_pidfile: str | None = None
    #: Of those moved, how many went with bytes owed, and how many bytes in all.
    owed_moved: int = 0
    owed_bytes: int = 0
    #: Whether the successor got the listening sockets (it may serve from then on).
    passed: bool = False
    stopped_accepting: bool = False
    admin_closed: bool = False

    @property
    def answer_seconds(self) -> float:
        """How long to wait for each answer of the successor (``limits.handoff_answer_seconds``)."""
        return self.node.config.limits.handoff_answer_seconds

    def close(self) -> None:
        """Stop watching the successor; close what is kept in spare."""
        if self.successor is not None:
            self.successor.close()
        self.close_spares()

    def close_spares(self) -> None:
        """Close the sockets kept in spare (those not served again)."""
        waiting = [connection.sock for connection in self.spare_waiting]
        for spare in (*self.spare_clients, *self.spare_admin, *waiting):
            spare.close()
        self.spare_clients, self.spare_admin, self.spare_waiting = [], [], []


def watch(channel: Channel) -> WatchedProcess | None:
    """The process at the other end of ``channel``, watched from now on (None: no pid).

    Opened as the handoff begins, while that process is connected: once it
    has exited and been reaped (by the supervisor, or by this process, whose
    child it is after an upgrade on SIGUSR2), its pid may name another.
    """
    return WatchedProcess(channel.peer_pid) if channel.peer_pid else None


async def give_up(moving: Moving) -> None:
    """After a failed handoff: take back what the successor holds, then serve it again here."""
    await take_back(moving)
    await _recover(moving)


async def take_back(moving: Moving) -> None:
    """Say ``ABORT``; return once the successor released the pending batches or is gone.

    A successor that neither answers nor exits within ``RELEASE_SECONDS``
    is killed first.
    """
    channel = moving.channel
    reclaimed = sorted(moving.pending)
    with contextlib.suppress(HandoffError):  # it may have closed the channel: see below
        channel.send(Kind.ABORT, abort_body(reclaimed))
    if not moving.passed:
        return  # it got nothing: there is nothing it could serve
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RELEASE_SECONDS
    if (released := await _released(channel, deadline)) is not None:
        log.info("the successor released the %d batches this process serves again", len(reclaimed))
        try:
            keys, unadopted, served = (
                released_keys(released),
                released_unadopted(released),
                released_of(released),
            )
        except HandoffError as exc:
            log.warning(
                "the successor's account of the batches it served is unreadable (%s): "
                "resuming them as cut, replaying from the cut",
                exc,
            )
            return
        moving.keys_changed = keys
        if unadopted is not None:  # else which it served is not known: replay from the cut
            moving.unadopted, moving.served_there = unadopted, served
        return
    successor = moving.successor
    exited = None
    if successor is not None:
        exited = await successor.exited(max(0.0, deadline - loop.time()))
    if exited:
        return
    if exited is None or successor is None:
        log.warning(
            "cannot tell whether the successor (pid %s) still holds browser connections "
            "(no pidfd here); serving them again",
            channel.peer_pid,
        )
        return
    log.error(
        "the successor (pid %d) neither released %d batches of browser connections nor "
        "exited within %g s: killing it, so that no browser is served by two processes",
        successor.pid,
        len(reclaimed),
        RELEASE_SECONDS,
    )
    successor.kill()
    if not await successor.exited(KILLED_SECONDS):
        log.error("the successor (pid %d) still runs after SIGKILL", successor.pid)


async def _released(channel: Channel, deadline: float) -> dict[str, Any] | None:
    """Read until the successor's ``RELEASED``; its body, or None: the channel ended, or time did.

    ``deadline`` is on the loop's clock.
    """
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                kind, body, fds = await channel.receive()
                for fd in fds:  # nothing it sends carries any: keep no stray one
                    os.close(fd)
                if kind is Kind.RELEASED:
                    return body
    except (HandoffError, TimeoutError):
        return None


async def _recover(moving: Moving) -> None:
    """After a failed handoff: serve again what was cut but not adopted, accept again."""
    node = moving.node
    resumed = 0
    for number, cut in moving.pending.items():
        for index, (connection, state) in enumerate(cut):
            place = (number, index)
            if (keys := moving.keys_changed.get(place)) is not None:
                state = dataclasses.replace(state, keys=keys)
            since = moving.cut_at[number]
            if number in moving.served_there and place not in moving.unadopted:
                # The successor delivered all that was forwarded after the batch, and
                # first what the connection was owed.
                since = moving.forwarded_until or since
                state = dataclasses.replace(state, owed=b"")
            # Read now, not once for all: a held one's resumption awaits a new transport.
            await connection.resume(state, (time.monotonic() - since) * 1000.0)
            resumed += 1
    moving.pending.clear()
    await unhold_all(node.client_listeners)  # held, not cut yet: served here again
    if moving.stopped_accepting:
        for listener, spare in zip(node.client_listeners, moving.spare_clients, strict=False):
            await listener.accept(spare)
        moving.spare_clients = []
    if moving.admin_closed:
        waiting, moving.spare_waiting = moving.spare_waiting, []  # start_admin's from here
        await node.start_admin(moving.spare_admin, waiting)
        moving.spare_admin = []
    moving.close_spares()
    log.warning(
        "after the failed handoff: %d connections had moved, %d resumed here",
        moving.moved,
        resumed,
    )
