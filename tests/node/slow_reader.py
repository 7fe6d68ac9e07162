"""A browser that stops reading: a raw socket with a small receive buffer, its frames checked.

:class:`SlowReader` speaks WebSocket through websockets' sans-I/O client
over a plain socket, so the test decides when it reads: after subscribing
it reads nothing until told, and relay's writes pile up in the kernel (its
small receive buffer, relay's small send buffer) and then in relay's own
process. When it reads again, every byte goes through the client protocol,
which fails on anything that is not a valid frame stream (a frame cut short
and followed by another, bytes written twice). :func:`slow_reader_behind`
puts one behind bytes an in-process node's transport holds.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
from collections.abc import Callable

import orjson
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import Event
from websockets.uri import parse_uri

from relay.core.notification import parse_notification
from relay.node.node import Node
from tests.support import WAIT, eventually, notification

#: The receive buffer the reader asks for (the kernel doubles it): a few frames' worth.
RECEIVE_BUFFER = 4096
#: A send buffer for relay's side (``limits.socket_send_buffer_bytes``) as small.
SEND_BUFFER = 4096
#: What an in-process node routes while the browser does not read: ~60 KiB, many times
#: what the kernels hold for it, well under its outbound bound (1 MiB).
BEFORE = [f"m{index}" for index in range(30)]
AFTER = [f"n{index}" for index in range(3)]
FILLER = "x" * 2000
_QUEUED = struct.Struct("=i")


class SlowReader:
    """One browser subscribed to ``K`` on a raw socket; it reads only in :meth:`read_until`."""

    def __init__(self, sock: socket.socket, protocol: ClientProtocol) -> None:
        """Wrap ``sock`` (connected, non-blocking) and its ``protocol`` (open)."""
        self.sock = sock
        self.protocol = protocol
        #: Every message id received, in order.
        self.ids: list[str] = []
        #: The close frame received, if any.
        self.closed: Frame | None = None

    @classmethod
    async def open(cls, port: int) -> SlowReader:
        """Connect to 127.0.0.1:``port``, subscribe to ``K``, and wait until relay applied it."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before the connect: the window it announces in its handshake is this small.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(WAIT):
            await loop.sock_connect(sock, ("127.0.0.1", port))
        protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/"), max_size=None)
        protocol.send_request(protocol.connect())
        reader = cls(sock, protocol)
        await reader._send_pending()
        await reader._read(lambda: protocol.handshake_exc is not None or reader._opened)
        if protocol.handshake_exc is not None:
            raise protocol.handshake_exc
        await reader.send({"command": "subscribe", "data": ["K"]})
        await reader.send({"command": "ping"})
        await reader._read(lambda: reader._pongs > 0)
        return reader

    _opened = False
    _pongs = 0

    async def send(self, command: dict[str, object]) -> None:
        """Send one command frame."""
        self.protocol.send_text(orjson.dumps(command))
        await self._send_pending()

    def queued(self) -> int:
        """Bytes in this socket's receive queue: relay sent them, nobody read them yet."""
        (queued,) = _QUEUED.unpack(fcntl.ioctl(self.sock, termios.FIONREAD, bytes(_QUEUED.size)))
        return int(queued)

    def relay_send_queue(self) -> int:
        """Bytes in the kernel's send queue of relay's end of the connection (``/proc/net/tcp``)."""
        local_host, local_port = self.sock.getsockname()
        peer_host, peer_port = self.sock.getpeername()
        wanted = (_proc_address(peer_host, peer_port), _proc_address(local_host, local_port))
        with open("/proc/net/tcp") as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                if (fields[1], fields[2]) == wanted:
                    return int(fields[4].split(":")[0], 16)
        raise AssertionError(f"no connection {wanted} in /proc/net/tcp")

    async def read_until(self, last: str) -> list[str]:
        """Read until the message ``last`` came (or a close, or garbage); every id so far."""
        await self._read(lambda: (bool(self.ids) and self.ids[-1] == last) or self._ended())
        return self.ids

    def _ended(self) -> bool:
        return self.closed is not None or self.protocol.parser_exc is not None

    async def _read(self, done: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(WAIT):
            while not done():
                data = await loop.sock_recv(self.sock, 65536)
                if not data:
                    self.protocol.receive_eof()
                    raise ConnectionError(f"relay closed the connection after {self.ids[-3:]}")
                self.protocol.receive_data(data)
                for event in self.protocol.events_received():
                    self._take(event)
                if self.protocol.parser_exc is not None:
                    raise self.protocol.parser_exc
                await self._send_pending()  # answers to pings, a close's echo

    def _take(self, event: Event) -> None:
        if isinstance(event, Response):
            self._opened = event.status_code == 101
        elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
            message = orjson.loads(event.data)
            if message == {"type": "pong"}:
                self._pongs += 1
            else:
                self.ids.append(message["uniqueID"])
        elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
            self.closed = event

    async def _send_pending(self) -> None:
        loop = asyncio.get_running_loop()
        for data in self.protocol.data_to_send():
            if data:
                await loop.sock_sendall(self.sock, data)

    def close(self) -> None:
        """Drop the connection."""
        self.sock.close()


def _proc_address(host: str, port: int) -> str:
    """An IPv4 address as ``/proc/net/tcp`` writes it: the address' bytes in host order, hex."""
    packed = socket.inet_aton(host)
    return f"{struct.unpack('=I', packed)[0]:08X}:{port:04X}"


def publish(node: Node, ids: list[str], filler: str = "") -> None:
    """Route one message to ``K`` per id, as a post would."""
    for unique in ids:
        raw = orjson.dumps(notification("K", unique_id=unique, filler=filler))
        node.hub.publish("default", parse_notification(raw))


async def slow_reader_behind(node: Node) -> SlowReader:
    """A browser on ``node`` that reads nothing while ``BEFORE`` is routed to it.

    Returned once relay's transport holds some of it: the kernels took no more.
    """
    reader = await SlowReader.open(node.client_addresses[0][1])
    publish(node, BEFORE, FILLER)
    [connection] = node.client_listeners[0].connections()

    async def holding() -> bool:
        return bool(connection.unsent())

    await eventually(holding, "relay's transport holds bytes for the browser")
    return reader
