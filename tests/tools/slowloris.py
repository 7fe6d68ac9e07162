"""Slowloris attacker for the tests: N sockets that send a request one header line at a time.

Usage: ``python slowloris.py PORT COUNT INTERVAL LIMIT``. Prints ``ready`` once
every socket is connected and has sent its request line, then one JSON list:
how long each socket lived until the server closed it (or LIMIT seconds).
Runs in its own process so that the attack does not slow the test's loop.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import sys
import time


def main() -> None:
    port, count, interval, limit = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        float(sys.argv[3]),
        float(sys.argv[4]),
    )
    selector = selectors.DefaultSelector()
    opened: dict[socket.socket, float] = {}
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET / HTTP/1.1\r\n")
        sock.setblocking(False)
        opened[sock] = time.monotonic()
        selector.register(sock, selectors.EVENT_READ)
    print("ready", flush=True)
    lived: list[float] = []
    next_line = time.monotonic() + interval
    give_up = time.monotonic() + limit
    while opened and time.monotonic() < give_up:
        for key, _ in selector.select(timeout=max(0.0, next_line - time.monotonic())):
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            sock = ready
            try:
                data = sock.recv(1)
            except ConnectionResetError:
                data = b""
            assert data == b"", "the server must answer nothing to an unfinished handshake"
            lived.append(time.monotonic() - opened.pop(sock))
            selector.unregister(sock)
            sock.close()
        if time.monotonic() >= next_line:
            for sock in opened:
                with contextlib.suppress(OSError):  # closed since: read next round
                    sock.send(b"X-Slow: 1\r\n")
            next_line += interval
    lived += [time.monotonic() - started for started in opened.values()]
    print(json.dumps(lived), flush=True)


if __name__ == "__main__":
    main()
