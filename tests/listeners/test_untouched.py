"""``read_nothing`` tells a connection no one has read from, as the kernel counts it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from relay.listeners.untouched import read_nothing
from tests.support import WAIT


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A client and the server side of its connection, over loopback."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        client = socket.create_connection(listening.getsockname())
        server, _ = listening.accept()
    with client, server:
        server.settimeout(WAIT)
        yield client, server


def _queued(server: socket.socket, count: int) -> None:
    """Wait until ``count`` bytes wait in ``server``'s receive queue (loopback: at once)."""
    peeked = server.recv(count, socket.MSG_PEEK | socket.MSG_WAITALL)
    assert len(peeked) == count


def test_a_connection_that_sent_nothing_is_untouched(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    _client, server = pair
    assert read_nothing(server.fileno())


def test_bytes_waiting_unread_leave_it_untouched(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = pair
    client.sendall(b"POST / HTTP/1.1\r\n")
    _queued(server, 17)  # a peek reads nothing off the queue
    assert read_nothing(server.fileno())


def test_one_byte_read_is_a_touch(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    client.sendall(b"POST")
    assert server.recv(1) == b"P"
    _queued(server, 3)
    assert not read_nothing(server.fileno())


def test_a_half_closed_connection_is_not_untouched(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = pair
    client.shutdown(socket.SHUT_WR)
    assert server.recv(1) == b""  # the FIN is there: nothing else to wait for
    assert not read_nothing(server.fileno())


def test_what_is_not_tcp_is_never_untouched() -> None:
    left, right = socket.socketpair()
    with left, right:
        assert not read_nothing(left.fileno())
        left.sendall(b"x")  # the descriptor was borrowed, not closed
        assert right.recv(1) == b"x"
