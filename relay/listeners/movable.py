"""A browser connection that can move to another relay process, and the cut that moves them.

:class:`MovableConnection` is a browser connection that can leave (``detach``
stops it at the cut and returns its state and socket) and arrive
(``adopt`` rebuilds it, already open, around a passed socket). The bytes
received past the last complete frame (usually none: browsers send small
whole frames) are what ``relay.core.websocket`` keeps; the successor is fed
them first. A handoff carries them over ``relay.listeners.handoff``'s
channel, a restart through systemd's file descriptor store.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from websockets.protocol import State

from relay.core.websocket import ServerFrames
from relay.links.handoff_wire import ConnectionState
from relay.listeners.browser import BrowserConnection, ConnectionContext

if TYPE_CHECKING:
    from relay.listeners.client_listener import ClientListener


class MovableConnection(BrowserConnection):
    """A browser connection that can be handed to another relay process."""

    __slots__ = ("_adoption",)

    def __init__(self, listener: ConnectionContext) -> None:
        """Create the protocol for one socket accepted by ``listener``."""
        super().__init__(listener)
        #: The state this connection is adopted with, until ``connection_made``.
        self._adoption: ConnectionState | None = None

    @classmethod
    def adopting(cls, listener: ConnectionContext, state: ConnectionState) -> MovableConnection:
        """A connection that resumes ``state``: its WebSocket is open from the start.

        Give it to ``loop.connect_accepted_socket`` with the passed socket.
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

    def detach(self, listener_index: int) -> tuple[ConnectionState, int] | None:
        """Stop this connection at the cut; return its state and socket, or None if it cannot move.

        It cannot move while its handshake or closing is under way, over TLS,
        with permessage-deflate (the compressor's context stays behind), or
        while part of what it was sent is still in this process' buffer.
        After this the hub no longer knows it and nothing is read or written;
        ``release`` or ``resume`` follows.
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
        if sock is None or transport.get_write_buffer_size():
            return None
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
        )
        hub.disconnect(self)
        self._open = self._counted = False
        return state, sock.fileno()

    def release(self) -> None:
        """The successor adopted this connection: close this process' descriptor only.

        No shutdown and no reset: the socket lives on in the successor.
        """
        if self._transport is not None:
            self._transport.abort()

    def resume(self, state: ConnectionState, missed_ms: float) -> None:
        """The successor failed before adopting this connection: serve it here again.

        What was routed since the cut (``missed_ms``) is replayed from history.
        """
        if self._transport is None or self._transport.is_closing():
            return
        hub = self._listener.hub
        self._open = self._counted = True
        hub.connect(self)
        hub.subscribe(self, state.keys, catch_up=False)
        hub.replay(self, missed_ms)
        with contextlib.suppress(RuntimeError):
            self._transport.resume_reading()


#: One connection cut: the connection, its state, its socket's descriptor.
Cut = tuple["MovableConnection", ConnectionState, int]


def cut_movable(
    listeners: Sequence[ClientListener], limit: int | None = None
) -> tuple[list[Cut], int]:
    """Detach the connections of ``listeners`` (a node's, in config order) that can move now.

    At most ``limit`` of them (None: all), across every listener. Returns the
    cut and how many of those looked at are still in their handshake (they
    can move once open; a caller that got ``limit`` should look again anyway).
    """
    cut: list[Cut] = []
    waiting = 0
    for index, listener in enumerate(listeners):
        for connection in listener.connections():
            if limit is not None and len(cut) >= limit:
                return cut, waiting
            if not isinstance(connection, MovableConnection):
                continue
            detached = connection.detach(index)
            if detached is not None:
                cut.append((connection, *detached))
            elif connection.in_handshake:
                waiting += 1
    return cut, waiting


async def adopt(listener: ConnectionContext, state: ConnectionState, fd: int) -> MovableConnection:
    """Serve the passed browser socket ``fd`` from ``listener``, resuming ``state``; return it.

    Raises:
        OSError: ``fd`` is not a usable socket (it is closed).
    """
    sock = socket.socket(fileno=fd)
    connection = MovableConnection.adopting(listener, state)
    try:
        await asyncio.get_running_loop().connect_accepted_socket(lambda: connection, sock)
    except BaseException:
        sock.close()
        raise
    return connection
