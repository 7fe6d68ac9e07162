"""The channel between an old relay process and its successor in a handoff.

:class:`Channel` carries ``relay.links.handoff_wire`` messages, with file
descriptors, over a ``SOCK_SEQPACKET`` unix socket without blocking the loop;
sending is synchronous (queued in order when the socket is full), so a message
sent from a hub callback takes its place in the stream at that very moment.
The connections it carries are ``relay.listeners.movable``'s.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import logging
import os
import socket
from collections.abc import Sequence

from relay.links.handoff_wire import (
    PIECE_BYTES,
    HandoffError,
    Kind,
    Reassembly,
    decode,
    encode,
    pieces,
)
from relay.process.peer_process import peer_pid

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
