"""A browser connection that can move to another relay process, and the cut that moves them.

:class:`MovableConnection` is a browser connection that can leave (``detach``
stops it at the cut and returns its state and socket) and arrive
(``adopt`` rebuilds it, already open, around a passed socket). The bytes
received past the last complete frame (usually none: browsers send small
whole frames) are what ``relay.core.websocket`` keeps; the successor is fed
them first. The bytes relay wrote to a slow reader that its socket had not
taken go too, where the successor takes them (``owed``), and it writes them
first: such a connection is held first (``relay.listeners.held``), and cut
on a later round, once what it is owed is known. A handoff carries them
over ``relay.listeners.handoff``'s channel, a restart through systemd's file
descriptor store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from websockets.protocol import State

from relay.core.websocket import ServerFrames
from relay.links.handoff_wire import OWED_BYTES_LIMIT, ConnectionState
from relay.listeners.browser import BrowserConnection, ConnectionContext
from relay.listeners.bytes_taken import bytes_taken
from relay.listeners.held import HeldTransport

if TYPE_CHECKING:
    from relay.listeners.client_listener import ClientListener

log = logging.getLogger("relay.handoff")

#: How long a held connection that did not move may wait for its stopped transport to be gone.
UNHOLD_SECONDS = 1.0


class MovableConnection(BrowserConnection):
    """A browser connection that can be handed to another relay process."""

    __slots__ = ("_adoption", "_replay_since")

    def __init__(self, listener: ConnectionContext) -> None:
        """Create the protocol for one socket accepted by ``listener``."""
        super().__init__(listener)
        #: The state this connection is adopted with, until ``connection_made``.
        self._adoption: ConnectionState | None = None
        #: Served again here after it was cut (monotonic seconds of the cut):
        #: what was routed since is replayed as it opens.
        self._replay_since: float | None = None

    @classmethod
    def adopting(
        cls, listener: ConnectionContext, state: ConnectionState, replay_since: float | None = None
    ) -> MovableConnection:
        """A connection that resumes ``state``: its WebSocket is open from the start.

        Give it to ``loop.connect_accepted_socket`` with the passed socket.
        ``replay_since``: the connection was cut at that moment (monotonic)
        in this process, and gets what was routed since from history.
        """
        connection = cls(listener)
        message_size = None
        if state.fragments is not None:
            # A continuation frame must follow, and the whole message stay under the limit.
            message_size = len(state.fragments)
            connection._fragments = bytearray(state.fragments)
        connection._handshake = None
        connection._ws = ServerFrames(message_size=message_size)
        connection._adoption = state
        connection._replay_since = replay_since
        connection.instance = state.instance
        return connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the connection; an adopted one is open at once, with its subscriptions.

        What it is owed is written first, before anything routed to it.
        """
        super().connection_made(transport)
        state, self._adoption = self._adoption, None
        if state is None:
            return
        self._cancel_timer()  # no handshake to wait for
        self._address = state.address
        self._last_heard = time.monotonic() - state.silent_for
        self._pinged = state.pinged
        self._open = self._counted = True  # open before the write: past the bound, pause_writing
        if state.owed:
            self._send(state.owed)
        hub = self._listener.hub
        hub.connect(self)
        hub.subscribe(self, state.keys, catch_up=False)  # it got them from the old process
        since, self._replay_since = self._replay_since, None
        if since is not None:
            hub.replay(self, (time.monotonic() - since) * 1000.0)
        if state.unparsed:
            self.data_received(state.unparsed)

    @property
    def is_open(self) -> bool:
        """Whether the WebSocket is open here: messages are delivered, commands read."""
        return self._open

    @property
    def in_handshake(self) -> bool:
        """Whether the WebSocket handshake is still under way (the connection cannot move yet)."""
        return self._ws is None and not self._closing

    @property
    def held(self) -> bool:
        """Whether it is held (``relay.listeners.held``) and not cut yet: a later cut moves it."""
        transport = self._transport
        return self._open and isinstance(transport, HeldTransport) and not transport.is_closing()

    def detach(
        self, listener_index: int, owed_room: int | None = None
    ) -> tuple[ConnectionState, int] | None:
        """Stop this connection at the cut; return its state and socket, or None if it cannot move.

        It cannot move while its handshake or closing is under way, over TLS,
        with permessage-deflate (the compressor's context stays behind), or
        while part of what it was sent is still in this process' transport,
        unless ``owed_room`` says how many such bytes it may carry (at most
        ``OWED_BYTES_LIMIT``): then this call holds it
        (``relay.listeners.held``), and a later one cuts it with what it is
        owed, once that is known and if it fits. After a cut the hub no
        longer knows it and nothing is read or written; ``release`` or
        ``resume`` follows.
        """
        transport = self._transport
        ws = self._ws
        if (
            transport is None
            or ws is None
            or not self._open
            or self._closing
            or ws.state is not State.OPEN
            or ws.extensions
            or transport.get_extra_info("sslcontext") is not None
        ):
            return None
        if self._queued:
            self.write_queued(self._listener.coalescer.clock())
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        if isinstance(transport, HeldTransport):
            owed = transport.owed()
            if owed is None or owed_room is None or len(owed) > min(owed_room, OWED_BYTES_LIMIT):
                return None
        elif transport.get_write_buffer_size():
            if owed_room is not None:
                self._hold(transport, sock.fileno())
            return None
        else:
            owed = b""
            transport.pause_reading()
        hub = self._listener.hub
        state = ConnectionState(
            listener=listener_index,
            address=self._address,
            instance=self.instance,
            keys=tuple(sorted(hub.keys_of(self))),
            pinged=self._pinged,
            silent_for=max(0.0, time.monotonic() - self._last_heard),
            unparsed=ws.unparsed,
            fragments=None if self._fragments is None else bytes(self._fragments),
            owed=owed,
        )
        hub.disconnect(self)
        self._open = self._counted = False
        return state, sock.fileno()

    def _hold(self, transport: asyncio.Transport, fd: int) -> None:
        """Stop ``transport`` (its socket ``fd``), which holds bytes; hold the connection instead.

        Left as it is when what the transport holds cannot be told, or is
        more than a connection carries.
        """
        owed = self.unsent()
        taken = bytes_taken(fd)
        if owed is None or taken is None or len(owed) > OWED_BYTES_LIMIT:
            return
        bound = self._listener.limits.outbound_buffer_bytes
        held = HeldTransport(self, socket.socket(fileno=os.dup(fd)), owed, taken, bound)
        held.stand_in(transport)
        self._transport = held
        self._unsent = None  # the held transport knows what is owed

    async def unhold(self, listener_index: int) -> None:
        """Serve a held connection that did not move here again, on a new transport.

        The new transport writes what it is owed first. One whose owed bytes
        cannot be told is reset (it reconnects). Nothing for a connection
        not held.
        """
        transport = self._transport
        if not isinstance(transport, HeldTransport) or transport.is_closing():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(UNHOLD_SECONDS):
                await transport.gone.wait()
        cut_at = time.monotonic()
        detached = self.detach(listener_index, OWED_BYTES_LIMIT)
        if detached is None:
            log.warning("browser %s was held, and cannot be served again: reset", self._address)
            self.reset()
            return
        await self.resume(detached[0], (time.monotonic() - cut_at) * 1000.0)

    def release(self) -> None:
        """The successor adopted this connection: close this process' descriptor only.

        No shutdown and no reset: the socket lives on in the successor.
        """
        if self._transport is not None:
            self._transport.abort()

    async def resume(self, state: ConnectionState, missed_ms: float) -> None:
        """The successor failed before adopting this connection: serve it here again.

        What was routed since the cut (``missed_ms``) is replayed from history.
        A held connection is served by a new transport on its socket (and a
        new connection object), which writes what it is owed first.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if isinstance(transport, HeldTransport):
            since = time.monotonic() - missed_ms / 1000.0
            fd = os.dup(transport.get_extra_info("socket").fileno())
            transport.abort()  # this object's end (its admission slot, its place in the listener)
            try:
                await adopt(self._listener, state, fd, replay_since=since)
            except OSError as exc:
                log.warning("could not serve browser %s again: %s", state.address, exc)
            return
        hub = self._listener.hub
        self._open = self._counted = True
        hub.connect(self)
        hub.subscribe(self, state.keys, catch_up=False)
        hub.replay(self, missed_ms)
        with contextlib.suppress(RuntimeError):
            transport.resume_reading()


#: One connection cut: the connection, its state, its socket's descriptor.
Cut = tuple["MovableConnection", ConnectionState, int]


def cut_movable(
    listeners: Sequence[ClientListener], limit: int | None = None, owed_room: int | None = None
) -> tuple[list[Cut], int]:
    """Detach the connections of ``listeners`` (a node's, in config order) that can move now.

    At most ``limit`` of them (None: all), across every listener, carrying at
    most ``owed_room`` bytes owed in all (None: only connections relay owes
    nothing move, for a successor that does not take owed bytes; otherwise
    one it owes bytes is held by a call and cut by a later one). Returns the
    cut and how many of those looked at cannot move yet but will (still in
    their handshake, or held); a caller that got ``limit`` should look again
    anyway.
    """
    cut: list[Cut] = []
    waiting = 0
    room = owed_room
    for index, listener in enumerate(listeners):
        for connection in listener.connections():
            if limit is not None and len(cut) >= limit:
                return cut, waiting
            if not isinstance(connection, MovableConnection):
                continue
            detached = connection.detach(index, room)
            if detached is not None:
                cut.append((connection, *detached))
                if room is not None:
                    room -= len(detached[0].owed)
            elif connection.in_handshake or connection.held:
                waiting += 1
    return cut, waiting


async def unhold_all(listeners: Sequence[ClientListener]) -> int:
    """Serve every connection still held on ``listeners`` here again; how many there were.

    For a handoff or a restart that ends (or fails) with some not moved:
    they go on as any slow reader here (``MovableConnection.unhold``).
    """
    held = [
        (index, connection)
        for index, listener in enumerate(listeners)
        for connection in listener.connections()
        if isinstance(connection, MovableConnection) and connection.held
    ]
    for index, connection in held:
        await connection.unhold(index)
    return len(held)


async def adopt(
    listener: ConnectionContext, state: ConnectionState, fd: int, replay_since: float | None = None
) -> MovableConnection:
    """Serve the passed browser socket ``fd`` from ``listener``, resuming ``state``; return it.

    ``replay_since``: see ``MovableConnection.adopting``.

    Raises:
        OSError: ``fd`` is not a usable socket (it is closed).
    """
    sock = socket.socket(fileno=fd)
    connection = MovableConnection.adopting(listener, state, replay_since)
    try:
        await asyncio.get_running_loop().connect_accepted_socket(lambda: connection, sock)
    except BaseException:
        sock.close()
        raise
    return connection
