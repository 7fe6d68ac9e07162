"""Many lean browsers in one process, for load tests: they read fast and check what they got.

Usage: ``python readers.py PORT COUNT KEY EXPECTED LIMIT``. Opens COUNT WebSocket
connections, subscribes each to KEY, prints ``ready``, then reads until every
connection has received EXPECTED messages (or LIMIT seconds pass) and prints a
JSON report: per connection, how many messages arrived and how many of the
``n`` fields 0..EXPECTED-1 were missing or repeated (posts may be concurrent,
so arrival order is not checked here). Frames are parsed with a minimal
RFC 6455 reader (server frames are unmasked) so one process keeps up with
hundreds of thousands of messages a second.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import socket
import struct
import sys
import time

import orjson


def handshake(port: int, key: str, receive_buffer: int | None = None) -> socket.socket:
    """Open one WebSocket connection and subscribe it to ``key``.

    ``receive_buffer`` shrinks the socket's receive buffer (set before connecting,
    so the TCP window is small from the start).
    """
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    nonce = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response
    for command in ({"command": "subscribe", "data": [key]}, {"command": "ping"}):
        payload = orjson.dumps(command)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(bytes((0x81, 0x80 | len(payload))) + mask + masked)
    pong = b""
    while b"pong" not in pong:  # the barrier: the subscription is in place
        pong += sock.recv(4096)
    sock.setblocking(False)
    return sock


class Reader:
    """Splits one connection's byte stream into text frames and checks their order."""

    def __init__(self, expected: int) -> None:
        self.buffer = bytearray()
        self.count = 0
        self.seen = bytearray(expected)
        self.repeated = 0

    def feed(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= 2:
            length = buffer[offset + 1] & 0x7F
            header = 2
            if length == 126:
                if len(buffer) - offset < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, offset + 2)
                header = 4
            elif length == 127:
                if len(buffer) - offset < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, offset + 2)
                header = 10
            end = offset + header + length
            if end > len(buffer):
                break
            opcode = buffer[offset] & 0x0F
            if opcode == 0x1:  # text; a close or ping frame is not a message
                n = orjson.loads(bytes(buffer[offset + header : end]))["n"]
                if self.seen[n]:
                    self.repeated += 1
                self.seen[n] = 1
                self.count += 1
            offset = end
        del buffer[:offset]


def main() -> None:
    port, count, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    expected, limit = int(sys.argv[4]), float(sys.argv[5])
    selector = selectors.DefaultSelector()
    readers = {}
    for _ in range(count):
        sock = handshake(port, key)
        readers[sock] = Reader(expected)
        selector.register(sock, selectors.EVENT_READ)
    print("ready", flush=True)
    give_up = time.monotonic() + limit
    pending = set(readers)
    while pending and time.monotonic() < give_up:
        for selected, _ in selector.select(timeout=0.5):
            ready = selected.fileobj
            assert isinstance(ready, socket.socket)
            sock = ready
            data = sock.recv(1 << 20)
            if not data:
                selector.unregister(sock)
                pending.discard(sock)
                continue
            reader = readers[sock]
            reader.feed(data)
            if reader.count >= expected:
                pending.discard(sock)
    report = [
        {"count": r.count, "missing": r.seen.count(0), "repeated": r.repeated}
        for r in readers.values()
    ]
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
