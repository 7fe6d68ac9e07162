"""A lean application server: POSTs over one keep-alive HTTP/1.1 connection, as a Protocol.

aiohttp's client costs more CPU per request than relay's admin side spends
answering it, so the throughput scenarios would measure the load generator.
This client writes a pre-formatted request and reads just enough of the
response (status line, Content-Length) to find where the next one starts.
"""

from __future__ import annotations

import asyncio
from collections import deque


class PostConnection(asyncio.Protocol):
    """One keep-alive connection to relay's admin port; requests may be pipelined."""

    def __init__(self, port: int, path: str = "/") -> None:
        """Post to ``http://127.0.0.1:port{path}``."""
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._waiting: deque[asyncio.Future[int]] = deque()
        self.lost: Exception | None = None

    @classmethod
    async def open(cls, port: int, path: str = "/") -> PostConnection:
        """Connect to the admin port."""
        loop = asyncio.get_running_loop()
        _transport, connection = await loop.create_connection(
            lambda: cls(port, path), "127.0.0.1", port
        )
        return connection

    def post(self, body: bytes) -> asyncio.Future[int]:
        """Send one POST; the future gives the response status once it has been read whole."""
        assert self.transport is not None
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self.lost is not None:
            waiter.set_exception(self.lost)
            return waiter
        self._waiting.append(waiter)
        self.transport.write(b"%s%d\r\n\r\n%s" % (self._head, len(body), body))
        return waiter

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """Complete a waiter for each whole response in the bytes read so far."""
        buffer = self._buffer + data if self._buffer else data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            marker = head.find(b"content-length:")
            length = 0
            if marker >= 0:
                line_end = head.find(b"\r\n", marker)
                length = int(head[marker + 15 : line_end if line_end >= 0 else None])
            elif b"transfer-encoding: chunked" in head:
                # Node (Aphlict) answers in chunks; a receipt never holds the last-chunk marker.
                last = buffer.find(b"\r\n0\r\n\r\n", end + 2)
                if last < 0:
                    break
                length = last + 7 - (end + 4)
            if len(buffer) < end + 4 + length:
                break
            status = int(buffer[9:12])
            buffer = buffer[end + 4 + length :]
            if self._waiting:
                waiter = self._waiting.popleft()
                if not waiter.done():
                    waiter.set_result(status)
        self._buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail every request still waiting for its answer."""
        self.lost = ConnectionError(f"admin connection lost: {exc}")
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(self.lost)

    def close(self) -> None:
        """Close the connection."""
        if self.transport is not None:
            self.transport.close()
