"""Moving live browser connections to another relay process: the channel and the connection.

:class:`Channel` carries ``relay.links.handoff_wire`` messages, with file
descriptors, over a ``SOCK_SEQPACKET`` unix socket without blocking the loop;
sending is synchronous (queued in order when the socket is full), so a message
sent from a hub callback takes its place in the stream at that very moment.

:class:`MovableConnection` is a browser connection that can leave (``detach``
stops it at the cut and returns its state and socket) and arrive
(``adopt`` rebuilds it, already open, around a passed socket). The bytes
received past the last complete frame (usually none: browsers send small
whole frames) are what ``relay.core.websocket`` keeps; the successor is fed
them first.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from websockets.protocol import State

from relay.core.websocket import ServerFrames
from relay.links.handoff_wire import (
    PIECE_BYTES,
    ConnectionState,
    HandoffError,
    Kind,
    Reassembly,
    decode,
    encode,
    pieces,
)
from relay.listeners.browser import BrowserConnection, ConnectionContext
from relay.process.peer_process import peer_pid

if TYPE_CHECKING:
    from relay.listeners.client_listener import ClientListener

log = logging.getLogger("relay.handoff")

#: Longest message the channel accepts (a batch of records, a forwarded post).
MESSAGE_LIMIT = 64 * 1024 * 1024
#: Most descriptors one received datagram may carry.
_MAX_FDS = 253


class Channel:
    """One end of a handoff: ordered messages with descriptors, both ways."""

    def __init__(self, sock: socket.socket) -> None:
        """Take over ``sock`` (a connected ``SOCK_SEQPACKET`` unix socket)."""
        sock.setblocking(False)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        #: Datagrams not sent yet, with the descriptors of the last piece and
        #: the descriptors to close once sent.
        self._outgoing: collections.deque[tuple[bytes, list[int], list[int]]] = collections.deque()
        self._incoming: asyncio.Queue[tuple[Kind, dict[str, object], list[int]] | None] = (
            asyncio.Queue()
        )
        self._reassembly = Reassembly(MESSAGE_LIMIT)
        self._fds: list[int] = []
        #: Set while nothing waits to be sent.
        self._flushed = asyncio.Event()
        self._flushed.set()
        self.closed = False
        #: Why the channel ended, for the error a later ``receive`` raises.
        self._ended = "the other process closed the handoff channel"
        #: The pid of the process at the other end, read while the socket is
        #: open (the channel may have ended by the time someone asks).
        self.peer_pid: int | None = None
        with contextlib.suppress(OSError):
            self.peer_pid = peer_pid(sock)
        self._loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    async def connect(cls, path: str) -> Channel:
        """Connect to the handoff socket at ``path``.

        Raises:
            OSError: nothing listens there.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, path)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def send(
        self, kind: Kind, body: dict[str, object], fds: Sequence[int] = (), *, owned: bool = False
    ) -> None:
        """Queue one message (with ``fds``, closed once sent when ``owned``) and send what fits."""
        if self.closed:
            raise HandoffError("the handoff channel is closed")
        parts = pieces(encode(kind, body), PIECE_BYTES)
        for part in parts[:-1]:
            self._outgoing.append((part, [], []))
        self._outgoing.append((parts[-1], list(fds), list(fds) if owned else []))
        self._flushed.clear()
        if len(self._outgoing) == len(parts):
            self._write()

    def _write(self) -> None:
        """Send queued datagrams until the socket is full; then wait until it is writable."""
        while self._outgoing:
            data, fds, owned = self._outgoing[0]
            try:
                if fds:
                    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    self._sock.sendmsg([data], ancillary)
                else:
                    self._sock.send(data)
            except BlockingIOError:
                self._loop.add_writer(self._sock.fileno(), self._writable)
                return
            except OSError as exc:
                self._lost(exc)
                return
            self._outgoing.popleft()
            for fd in owned:
                os.close(fd)
        self._loop.remove_writer(self._sock.fileno())
        self._flushed.set()

    async def flush(self) -> bool:
        """Wait until all that was queued is sent (or the channel closed); whether it was sent."""
        await self._flushed.wait()
        return not self.closed

    def _writable(self) -> None:
        self._write()

    def _readable(self) -> None:
        while True:
            try:
                data, fds, _flags, _address = socket.recv_fds(self._sock, PIECE_BYTES, _MAX_FDS)
            except BlockingIOError:
                return
            except OSError as exc:
                self._lost(exc)
                return
            if not data:
                self._lost(None)
                return
            self._fds.extend(fds)
            try:
                message = self._reassembly.add(data)
                if message is not None:
                    kind, body = decode(message)
                    received, self._fds = self._fds, []
                    self._incoming.put_nowait((kind, body, received))
            except HandoffError as exc:
                self._lost(exc)
                return

    async def receive(self) -> tuple[Kind, dict[str, object], list[int]]:
        """The next message, its body and the descriptors that came with it.

        Raises:
            HandoffError: the other process closed the channel or sent garbage.
        """
        return self._item(await self._incoming.get())

    async def receive_within(
        self, seconds: float
    ) -> tuple[Kind, dict[str, object], list[int]] | None:
        """The next message if it comes within ``seconds``, else None.

        One that came in the same moment as the deadline counts, whichever of
        the two the loop saw first: a process stopped for a while and woken
        sees both at once.

        Raises:
            HandoffError: the other process closed the channel or sent garbage.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                return await self.receive()
        return self.receive_now()

    def receive_now(self) -> tuple[Kind, dict[str, object], list[int]] | None:
        """The next message if one has arrived (read from the socket now), else None.

        Raises:
            HandoffError: the other process closed the channel or sent garbage.
        """
        if not self.closed:
            self._readable()
        if self._incoming.empty():
            return None
        return self._item(self._incoming.get_nowait())

    def _item(
        self, item: tuple[Kind, dict[str, object], list[int]] | None
    ) -> tuple[Kind, dict[str, object], list[int]]:
        if item is None:
            self._incoming.put_nowait(None)  # every later receive fails too
            raise HandoffError(self._ended)
        return item

    def _lost(self, exc: Exception | None) -> None:
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            # The other process closed its end (a reset only says it left
            # something unread): the caller decides whether that was a failure.
            log.debug("the handoff channel ended: %s", exc)
            self._ended = f"the other process closed the handoff channel ({exc.strerror})"
        elif exc is not None:
            log.warning("handoff channel failed: %s", exc)
            self._ended = f"the handoff channel failed: {exc}"
        self.close()

    def close(self) -> None:
        """Close the socket; a pending ``receive`` fails. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._loop.remove_writer(self._sock.fileno())
        for _data, _fds, owned in self._outgoing:
            for fd in owned:
                os.close(fd)
        self._outgoing.clear()
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        self._sock.close()
        self._incoming.put_nowait(None)
        self._flushed.set()  # nothing more will be sent


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
        """Admit the connection; an adopted one is open at once, with its subscriptions."""
        super().connection_made(transport)
        state, self._adoption = self._adoption, None
        if state is None:
            return
        self._cancel_timer()  # no handshake to wait for
        self._address = state.address
        self._last_heard = time.monotonic() - state.silent_for
        self._pinged = state.pinged
        self._open = self._counted = True
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
