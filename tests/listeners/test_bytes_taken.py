"""``bytes_taken`` counts what was written to a connection, acknowledged or still queued."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from relay.listeners.bytes_taken import bytes_taken
from tests.support import WAIT


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A client (with a small receive buffer) and the server side of its connection."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(listening.getsockname())
        server, _ = listening.accept()
    with client, server:
        client.settimeout(WAIT)
        yield client, server


def _fill(server: socket.socket) -> int:
    """Write until the kernel takes no more (the client does not read); how much it took."""
    server.setblocking(False)
    written = 0
    try:
        while True:
            written += server.send(b"x" * 65536)
    except BlockingIOError:
        return written


def test_the_count_grows_by_what_is_written_whether_read_or_not(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = pair
    start = bytes_taken(server.fileno())
    assert start is not None
    server.sendall(b"hello")
    assert bytes_taken(server.fileno()) == start + 5
    written = 5 + _fill(server)
    assert bytes_taken(server.fileno()) == start + written  # mostly queued, unacknowledged
    read = 0
    while read < written:
        read += len(client.recv(65536))
    assert bytes_taken(server.fileno()) == start + written  # all acknowledged now


def test_a_socket_that_is_not_tcp_has_no_count() -> None:
    left, right = socket.socketpair()
    with left, right:
        assert bytes_taken(left.fileno()) is None
