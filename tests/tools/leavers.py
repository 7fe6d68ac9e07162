"""Many idle browsers in one process that record when and how the server closes each one.

Usage: ``python leavers.py PORT COUNT LIMIT``. Opens COUNT WebSocket
connections (idle: they subscribe to nothing), prints ``ready``,
then reads until every connection has ended (or LIMIT seconds pass) and
prints a JSON list, one entry per connection: ``at``, the monotonic time
(``time.monotonic()``, the same clock in every process of the machine) when
the server's close frame arrived, or the connection ended without one;
``code``, the close code (null without a close frame); and ``end``: "eof",
"reset" or "open" (still open at the limit). A close frame is answered, as a
browser does, so that the server can finish its closing handshake.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import selectors
import socket
import struct
import sys
import time


def handshake(port: int) -> socket.socket:
    """Open one WebSocket connection; return it once the server has answered 101."""
    sock = socket.create_connection(("127.0.0.1", port))
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
    assert response.endswith(b"\r\n\r\n"), "the server sent a frame before any was due"
    sock.setblocking(False)
    return sock


class Leaver:
    """One connection's close, read from its (unmasked) server frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.at: float | None = None
        self.code: int | None = None
        self.end = "open"

    def feed(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while len(buffer) >= 2:
            length = buffer[1] & 0x7F
            header = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                (length,) = struct.unpack_from("!H", buffer, 2)
                header = 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                (length,) = struct.unpack_from("!Q", buffer, 2)
                header = 10
            if len(buffer) < header + length:
                return
            opcode = buffer[0] & 0x0F
            payload = bytes(buffer[header : header + length])
            del buffer[: header + length]
            if opcode == 0x8 and self.at is None:
                self.at = time.monotonic()
                self.code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self.answer_close(payload[:2])

    def answer_close(self, code: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(code))
        # The server may not have waited: its close is recorded anyway.
        with contextlib.suppress(OSError):
            self.sock.sendall(bytes((0x88, 0x80 | len(code))) + mask + masked)

    def ended(self, how: str) -> None:
        self.end = how
        if self.at is None:
            self.at = time.monotonic()


def main() -> None:
    port, count, limit = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    selector = selectors.DefaultSelector()
    leavers = {}
    for _ in range(count):
        sock = handshake(port)
        leavers[sock] = Leaver(sock)
        selector.register(sock, selectors.EVENT_READ)
    print("ready", flush=True)
    give_up = time.monotonic() + limit
    pending = set(leavers)
    while pending and time.monotonic() < give_up:
        for selected, _ in selector.select(timeout=0.5):
            ready = selected.fileobj
            assert isinstance(ready, socket.socket)
            sock = ready
            leaver = leavers[sock]
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data, how = b"", "reset"
            else:
                how = "eof"
            if data:
                leaver.feed(data)
                continue
            leaver.ended(how)
            selector.unregister(sock)
            pending.discard(sock)
            sock.close()
    report = [{"at": v.at, "code": v.code, "end": v.end} for v in leavers.values()]
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
