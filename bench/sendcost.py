"""``python -m bench.sendcost``: what one loopback TCP send costs the sender, as relay's writes do.

A burst to 1,000 browsers is one write each, and most of a write's CPU is
the kernel's (bench ``burst``). This measures that floor without relay: one
process on the first CPU holds ``--sockets`` accepted connections and sends
``--bytes`` to each in turn, as a write pass does; a reader process on the
second CPU reads them all through epoll. It prints the median and least
microseconds per send over ``--passes`` passes, for each reader mode asked:

- ``sleeping``: the reader waits in ``epoll_wait``, as the bench's browsers
  do, so a send may have to wake it;
- ``polling``: the reader polls without sleeping, so no send wakes it.

On loopback the sender's ``send`` also runs the receiving socket's TCP work
and the reader's wakeup; with remote browsers their own machines would.
Every pass and wait is bounded; both processes exit at the end.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import time

#: Pause between passes, so that each starts with the reader drained (bursts are 0.4 s apart).
PAUSE = 0.2
#: The longest the reader waits for the sender to connect or close (seconds).
READER_TIMEOUT = 60.0


def _read_all(port: int, count: int, polling: bool, ready_fd: int) -> None:
    """Reader process: connect ``count`` sockets, signal ``ready_fd``, read until all close."""
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    poller = select.epoll()
    by_fd = {}
    for sock in sockets:
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
    os.write(ready_fd, b"r")
    open_count = count
    deadline = time.monotonic() + READER_TIMEOUT
    while open_count and time.monotonic() < deadline:
        for fd, _ in poller.poll(0 if polling else 1.0):
            if not by_fd[fd].recv(65536):
                poller.unregister(fd)
                open_count -= 1


def measure(count: int, size: int, passes: int, polling: bool) -> tuple[float, float]:
    """Median and least microseconds per send, with a ``polling`` or sleeping reader."""
    cpus = sorted(os.sched_getaffinity(0))
    ready_read, ready_write = os.pipe()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(count)
        reader = os.fork()
        if reader == 0:
            try:
                os.sched_setaffinity(0, {cpus[-1]})
                _read_all(listener.getsockname()[1], count, polling, ready_write)
            finally:
                os._exit(0)
        os.close(ready_write)
        connections: list[socket.socket] = []
        try:
            os.sched_setaffinity(0, {cpus[0]})
            connections.extend(listener.accept()[0] for _ in range(count))
            os.read(ready_read, 1)
            per_send = _passes(connections, b"x" * size, passes)
        finally:
            for connection in connections:
                connection.close()
            os.close(ready_read)
            os.waitpid(reader, 0)
            os.sched_setaffinity(0, set(cpus))
    return statistics.median(per_send), min(per_send)


def _passes(connections: list[socket.socket], payload: bytes, passes: int) -> list[float]:
    """Send ``payload`` to every connection in turn, ``passes`` times: microseconds per send."""
    per_send = []
    for _ in range(passes):
        started = time.perf_counter()
        for connection in connections:
            connection.send(payload)
        per_send.append((time.perf_counter() - started) * 1e6 / len(connections))
        time.sleep(PAUSE)
    return per_send


def main() -> None:
    """Measure each reader mode asked for and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--bytes", type=int, default=1800, help="per send (8 frames: ~1,800)")
    parser.add_argument("--passes", type=int, default=30)
    parser.add_argument("--reader", choices=("sleeping", "polling"), action="append")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        parser.error("needs two CPUs: the sender on one, the reader on another")
    for mode in args.reader or ["sleeping", "polling"]:
        median, least = measure(args.sockets, args.bytes, args.passes, mode == "polling")
        print(
            f"reader {mode:8}: {median:5.1f} us per send (median of {args.passes} passes), "
            f"least {least:5.1f}; {args.sockets} sockets, {args.bytes} bytes each"
        )


if __name__ == "__main__":
    main()
