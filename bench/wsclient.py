"""A lean browser: the client side of relay's WebSocket protocol, as one asyncio Protocol.

The load generator runs thousands of these per process, so each is one small
object: it sends a fixed handshake, then pre-built masked frames, and splits
what it receives into frames itself. relay may put several frames in one TCP
segment, or split one frame over several; the parser handles both and checks
that every text frame is one whole JSON message.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from array import array

import orjson

from bench import kstamp

#: A fixed key is fine: the benchmark does not check the server's accept hash.
_HANDSHAKE = (
    "GET {path} HTTP/1.1\r\n"
    "Host: 127.0.0.1:{port}\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)

OP_TEXT = 0x1
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

#: Length of the bench's uniqueIDs, and of the run tag that starts them.
UNIQUE_ID_LENGTH = 32
TAG_LENGTH = 8


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """A masked client frame; the all-zero mask leaves the payload as is, which is legal."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + b"\0\0\0\0" + payload


#: One text frame in this many is fully parsed as JSON, as a check on the lean parsing.
VERIFY_EVERY = 64

#: The read time's clock: the poster's stamp and the kernel's receive stamps are
#: CLOCK_REALTIME too, so all three compare directly.
_realtime_ns = time.time_ns
#: CLOCK_REALTIME minus CLOCK_MONOTONIC (ns), to give ``Tally.last`` on the monotonic clock.
_REALTIME_AHEAD_NS = time.time_ns() - time.monotonic_ns()

#: The most one stamped read takes (relay's burst to a browser is a few KB).
RECV_SIZE = 1 << 16
#: Linux's IP_BIND_ADDRESS_NO_PORT (the socket module does not name it).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

PING = client_frame(b'{"command":"ping"}')


def subscribe_frame(keys: list[str]) -> bytes:
    """The frame that subscribes to ``keys``."""
    return client_frame(orjson.dumps({"command": "subscribe", "data": keys}))


def unique_id(tag: str, seq: int) -> str:
    """The bench's 32-character uniqueID for message ``seq`` of the run ``tag``."""
    return f"{tag}{seq:0{UNIQUE_ID_LENGTH - TAG_LENGTH}d}"


class Tally:
    """What a group of browsers received: latencies and problems, shared to save memory."""

    __slots__ = (
        "arrivals_ns",
        "disordered",
        "dups",
        "exact_arrivals_ns",
        "foreign",
        "last",
        "latencies_ns",
        "malformed",
        "received",
        "sent_ns",
    )

    def __init__(self, *, keep_sent: bool = False) -> None:
        """An empty tally; with ``keep_sent``, each delivery's post time is kept too."""
        #: Post to read, per delivery.
        self.latencies_ns = array("q")
        #: Post to the kernel's receive stamp of the read that took the message (stamped
        #: browsers only). The kernel stamps a read with its **newest** bytes' arrival
        #: (and merges a newer segment's stamp into an unread one's), so this is exact
        #: for the message that ended the read and an upper bound for any before it:
        #: a browser reading late takes two posts' messages in one read, and the first
        #: gets the second's stamp.
        self.arrivals_ns = array("q")
        #: The exact subset: the message that ended its read, on a drained socket.
        self.exact_arrivals_ns = array("q")
        #: When each delivery was posted (monotonic ns, as the coordinator's clock), in
        #: the order of ``latencies_ns``: a scenario that changes something mid-run
        #: splits the latencies by it.
        self.sent_ns: array[int] | None = array("q") if keep_sent else None
        self.received = 0
        self.dups = 0
        self.malformed = 0
        self.foreign = 0
        #: Messages that arrived after the next message of their poster (see ``_received``).
        self.disordered = 0
        #: When the last counted message arrived (monotonic seconds).
        self.last = 0.0


async def connected_from(port: int, source: str) -> socket.socket:
    """A TCP socket connected from ``source`` (any free port) to ``port`` on 127.0.0.1.

    The port is chosen by connect(), not bind() (IP_BIND_ADDRESS_NO_PORT): bind()
    looks for a port no socket on the address holds, a search that slowed the
    100k scenario's connects to a crawl each time a generator's share of the
    port range filled up; connect() needs only a free four-tuple.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


class LeanBrowser(asyncio.Protocol):
    """One browser connection: handshake, subscribe, then count what arrives."""

    __slots__ = (
        "_buffer",
        "_handshaken",
        "_sock",
        "_subscribe",
        "closed",
        "kernel_stamps",
        "pong_waiter",
        "ready",
        "seen",
        "tag",
        "tally",
        "transport",
    )

    def __init__(
        self, subscribe: bytes, tag: str, seen_size: int, tally: Tally, kernel_stamps: bool = False
    ) -> None:
        """Subscribe with the ``subscribe`` frame; count messages of run ``tag`` into ``tally``.

        With ``kernel_stamps``, what follows the handshake is read with ``recvmsg``
        and each delivery's kernel receive time is tallied too (``Tally.arrivals_ns``).
        """
        self._subscribe = subscribe
        self.tag = tag.encode()
        self.tally = tally
        #: How many times each message seq arrived (saturating at 255).
        self.seen = bytearray(seen_size)
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._handshaken = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pong_waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.kernel_stamps = kernel_stamps
        #: A duplicate of the connection's socket, read with recvmsg (kernel stamps only).
        self._sock: socket.socket | None = None

    @classmethod
    async def connect(
        cls,
        port: int,
        path: str,
        subscribe: bytes,
        tag: str,
        seen_size: int,
        tally: Tally,
        source: str | None = None,
        kernel_stamps: bool = False,
    ) -> LeanBrowser:
        """Open, handshake, subscribe and wait for the pong that confirms the subscription.

        ``source`` is the loopback address to connect from (default: the kernel's pick);
        ``kernel_stamps`` as for the constructor.
        """
        loop = asyncio.get_running_loop()

        def factory() -> LeanBrowser:
            return cls(subscribe, tag, seen_size, tally, kernel_stamps)

        if source:
            sock = await connected_from(port, source)
            _transport, browser = await loop.create_connection(factory, sock=sock)
        else:
            _transport, browser = await loop.create_connection(factory, "127.0.0.1", port)
        assert browser.transport is not None
        browser.transport.write(_HANDSHAKE.format(path=path, port=port).encode())
        await browser.ready
        return browser

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        """Note the loss and wake whoever waits on this browser."""
        self.closed = True
        self._stop_stamped_reading()
        error = ConnectionError(f"connection lost: {exc}")
        for waiter in (self.ready, self.pong_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)

    def ping(self) -> asyncio.Future[None]:
        """Send a ping; the future completes when its pong arrives (everything before it has)."""
        assert self.transport is not None
        self.pong_waiter = asyncio.get_running_loop().create_future()
        self.transport.write(PING)
        return self.pong_waiter

    def abort(self) -> None:
        """Drop the connection at once (RST), and stop reading it."""
        self._stop_stamped_reading()
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        """Take bytes the transport read (the handshake; everything, without kernel stamps)."""
        self._received(data, _realtime_ns(), 0)

    def _read_stamped(self) -> None:
        """Read what the socket holds with the kernel's receive stamp (the loop's reader)."""
        sock, transport = self._sock, self.transport
        if sock is None or transport is None:
            return
        try:
            data, ancillary, _flags, _address = sock.recvmsg(RECV_SIZE, kstamp.ANCILLARY_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # The transport does not read, so it learns of the loss from us.
            transport.abort()
            return
        if not data:
            self._stop_stamped_reading()
            transport.close()
            return
        self._received(
            data, _realtime_ns(), kstamp.stamp_ns(ancillary), drained=len(data) < RECV_SIZE
        )

    def _start_stamped_reading(self) -> None:
        """From now on read with recvmsg, on a duplicate of the socket, instead of the transport.

        uvloop's transports read with read(2), which returns no ancillary data,
        and refuse a reader on a descriptor they own: a duplicate shares the
        socket (and its O_NONBLOCK) under another descriptor.
        """
        assert self.transport is not None
        fileno = self.transport.get_extra_info("socket").fileno()
        self._sock = sock = socket.socket(fileno=os.dup(fileno))
        kstamp.enable(sock)
        self.transport.pause_reading()
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read_stamped)

    def _stop_stamped_reading(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    def _received(self, data: bytes, now: int, arrived: int, *, drained: bool = True) -> None:
        """Split the bytes into frames; one read time (and kernel stamp) serves every frame.

        This runs once per delivery on the load generator's side, so it avoids a
        full JSON parse: each text frame must be one JSON object (checked by its
        braces, and by a full parse of every ``VERIFY_EVERY``-th frame), and the
        uniqueID and post time are found by searching for their keys. ``now`` is
        the read time and ``arrived`` the kernel's receive stamp (0: none), both
        CLOCK_REALTIME nanoseconds as the poster's. The stamp is exact only for a
        message whose frame ends what a ``drained`` read took (``Tally.arrivals_ns``).
        """
        buffer = self._buffer + data if self._buffer else data
        if not self._handshaken:
            buffer = self._handshake(buffer)
            if not buffer:
                return
        tally = self.tally
        counted = tally.received
        size = len(buffer)
        pos = 0
        last_arrival = 0  # of the last message of this read, until a frame follows it
        while size - pos >= 2:
            first, length = buffer[pos], buffer[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buffer[pos + 2] << 8) | buffer[pos + 3]
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, pos + 2)
                start = pos + 10
            end = start + length
            if end > size:
                break
            pos = end
            last_arrival = 0
            if first != 0x81:  # relay sends whole (FIN) text frames, pings and a close
                self._on_control(first & 0x0F, buffer[start:end])
                continue
            if buffer[start] != 0x7B or buffer[end - 1] != 0x7D:  # { ... }
                tally.malformed += 1
                continue
            at = buffer.find(b'"uniqueID":"', start, end)
            if at < 0 or buffer[at + 12 : at + 12 + TAG_LENGTH] != self.tag:
                if buffer.find(b'"pong"', start, end) >= 0:
                    self._on_pong()
                else:
                    tally.foreign += 1
                continue
            seq = int(buffer[at + 12 + TAG_LENGTH : at + 12 + UNIQUE_ID_LENGTH])
            seen = self.seen
            count = seen[seq]
            if count:
                tally.dups += 1
                if count < 255:
                    seen[seq] = count + 1
                continue
            seen[seq] = 1
            # A poster numbers its posts in order: the next one already here means
            # this one was overtaken (each disorder counts at least once this way).
            if seq + 1 < len(seen) and seen[seq + 1]:
                tally.disordered += 1
            at = buffer.find(b'"t":"', at, end)
            sent = int(buffer[at + 5 : at + 25])
            tally.latencies_ns.append(now - sent)
            if arrived:
                last_arrival = arrived - sent
                tally.arrivals_ns.append(last_arrival)
            if tally.sent_ns is not None:
                # The stamp is CLOCK_REALTIME; the coordinator's phase times are monotonic.
                tally.sent_ns.append(sent - _REALTIME_AHEAD_NS)
            tally.received += 1
            if tally.received % VERIFY_EVERY == 0:
                self._verify(buffer[start:end])
        if last_arrival and pos == size and drained:
            tally.exact_arrivals_ns.append(last_arrival)
        if tally.received != counted:
            # Monotonic, as the poster's start and end times it is compared with.
            tally.last = (now - _REALTIME_AHEAD_NS) / 1e9
        self._buffer = buffer[pos:] if pos < size else b""

    def _handshake(self, buffer: bytes) -> bytes:
        """Consume the handshake response; return what follows it (empty if none yet)."""
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            self._buffer = buffer
            return b""
        if not buffer.startswith(b"HTTP/1.1 101"):
            self._fail(ConnectionError(buffer[: buffer.find(b"\r\n")].decode()))
            return b""
        self._handshaken = True
        self._buffer = b""
        assert self.transport is not None
        if self.kernel_stamps:
            self._start_stamped_reading()
        self.transport.write(self._subscribe + PING)
        return buffer[end + 4 :]

    def _on_control(self, opcode: int, payload: bytes) -> None:
        """Answer pings as a browser does (relay drops browsers that do not); close on close."""
        assert self.transport is not None
        if opcode == OP_PING:
            self.transport.write(client_frame(payload, OP_PONG))
        elif opcode == OP_CLOSE:
            self.transport.close()
        else:
            self.tally.malformed += 1

    def _verify(self, payload: bytes) -> None:
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("touched"), list):
            self.tally.malformed += 1

    def _on_pong(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
        elif self.pong_waiter is not None and not self.pong_waiter.done():
            self.pong_waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
        assert self.transport is not None
        self.transport.abort()
