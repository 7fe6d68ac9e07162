"""A browser connection between two transports: what relay writes to it is held, not sent.

A slow reader can move to another process (a handoff, a restart) only with
the bytes relay still owes it: what its transport holds because the socket
took no more. No transport gives those bytes back, and none stops writing
at once while it stays open: asyncio's ``abort()`` drops its buffer at once,
uvloop's may still write some of it in the loop turn that follows. So the
connection is *held* (``relay.listeners.movable.MovableConnection``): its
transport is aborted, with the bytes it held known from relay's own record
of what it wrote (``BrowserConnection.unsent``) and the kernel's count of
what the socket had taken (``relay.listeners.bytes_taken``), and a
:class:`HeldTransport` takes its place on a duplicate of the socket. The
connection stays open meanwhile: what is routed to it is held in order
behind those bytes, up to its outbound bound as on any transport.

Once the old transport is gone (its ``connection_lost`` ran: it writes
nothing more), :meth:`HeldTransport.owed` tells what the browser is owed:
the bytes the old transport held, less those it wrote after all (the
kernel's count again), then everything held since. That goes with the
socket to the next transport, which writes it first.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Any

from relay.listeners.bytes_taken import bytes_taken

log = logging.getLogger("relay.handoff")

#: SO_LINGER on with a zero timeout: close() sends a reset and discards the send queue.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class HeldTransport(asyncio.Transport):
    """Stands in for a stopped transport: holds what is written, sends nothing, reads nothing."""

    def __init__(
        self, protocol: asyncio.Protocol, sock: socket.socket, owed: bytes, taken: int, high: int
    ) -> None:
        """Hold ``sock`` (this transport's to close) for ``protocol``.

        ``owed``: the bytes the stopped transport held, the kernel's count
        (``bytes_taken``) having been ``taken`` then; ``high``: past this many
        bytes held, ``protocol.pause_writing()`` (the outbound bound).
        """
        super().__init__()
        self._protocol = protocol
        self._sock = sock
        self._owed = owed
        self._taken = taken
        self._high = high
        self._held: list[bytes] = []
        self._size = len(owed)
        self._closing = False
        self._paused = False
        #: Set once the stopped transport is gone (it writes nothing more).
        self.gone = asyncio.Event()

    def stand_in(self, stopped: asyncio.Transport) -> None:
        """Take the place of ``stopped``: abort it, and learn when it is gone."""
        stopped.set_protocol(_Gone(self))
        stopped.abort()

    def owed(self) -> bytes | None:
        """What the browser is owed now, or None while that cannot be told yet.

        None while the stopped transport is not gone; a count that makes no
        sense (which the kernel does not give) resets the connection.
        """
        if not self.gone.is_set() or self._closing:
            return None
        taken = bytes_taken(self._sock.fileno())
        if taken is None:
            return None
        written = taken - self._taken  # by the stopped transport, after it was stopped
        if not 0 <= written <= len(self._owed):
            log.warning(
                "browser connection: %d bytes written after its transport stopped, of %d it "
                "held; connection reset",
                written,
                len(self._owed),
            )
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            self.abort()
            return None
        return self._owed[written:] + b"".join(self._held)

    # What a transport does.

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hold ``data`` behind what is held already."""
        if self._closing or not data:
            return
        self._held.append(bytes(data))
        self._size += len(data)
        if self._size > self._high and not self._paused:
            self._paused = True
            self._protocol.pause_writing()

    def get_write_buffer_size(self) -> int:
        """Every byte owed: none is sent from here."""
        return self._size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """No low mark: nothing drains."""
        return 0, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """A new outbound bound (a reload), applied from the next write."""
        if high is not None:
            self._high = high

    def can_write_eof(self) -> bool:
        """No: a close of a held connection drops it (``close``)."""
        return False

    def is_closing(self) -> bool:
        """Whether it was closed."""
        return self._closing

    def close(self) -> None:
        """Close the socket: what is held is lost (the browser sees its stream end, reconnects)."""
        self.abort()

    def abort(self) -> None:
        """Close the socket at once; ``connection_lost`` follows, as from any transport."""
        if self._closing:
            return
        self._closing = True
        self._sock.close()
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``socket``: the socket held; nothing else (no TLS: such a connection is never held)."""
        return self._sock if name == "socket" else default

    def is_reading(self) -> bool:
        """No: the browser's bytes wait in the kernel for the next transport."""
        return False

    def pause_reading(self) -> None:
        """Nothing is read anyway."""

    def resume_reading(self) -> None:
        """Nothing is read here: the next transport reads."""

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Serve ``protocol`` instead."""
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        """The protocol served."""
        return self._protocol


class _Gone(asyncio.Protocol):
    """The protocol of a stopped transport: tells the held one once it is gone."""

    def __init__(self, held: HeldTransport) -> None:
        self._held = held

    def connection_lost(self, exc: Exception | None) -> None:
        # uvloop closes its handle only after this returns: marked on the next turn.
        asyncio.get_running_loop().call_soon(self._held.gone.set)
