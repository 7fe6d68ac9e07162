"""``HeldTransport``: a stopped transport's last bytes, and what is held after them, exactly.

Real transports (asyncio's and uvloop's) over loopback: one holds bytes for
a client that does not read, is stopped with a held transport in its place,
and the client starts reading as it stops (uvloop's may write some of its
buffer in the loop turn after its ``abort``). What the held transport says
is owed, written after what the client got, must make exactly the stream
written: nothing lost, nothing twice.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest

from relay.links.handoff_wire import OWED_BYTES_LIMIT
from relay.listeners.bytes_taken import bytes_taken
from relay.listeners.handoff import MESSAGE_LIMIT
from relay.listeners.held import HeldTransport
from tests.support import WAIT


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.paused = 0
        self.lost = asyncio.Event()

    def pause_writing(self) -> None:
        self.paused += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


async def _transport_holding_bytes(
    client: socket.socket, server: socket.socket
) -> tuple[asyncio.Transport, bytes]:
    """A transport over ``server`` that holds bytes ``client`` did not read; all it was given."""
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(_Protocol, server)
    transport.set_write_buffer_limits(high=1 << 24)
    written = b""
    chunk = 0
    while not transport.get_write_buffer_size():
        data = bytes([chunk % 251]) * 3000
        chunk += 1
        transport.write(data)
        written += data
    return transport, written


def _read(client: socket.socket, count: int, into: list[bytes]) -> None:
    received = 0
    while received < count:
        data = client.recv(65536)
        assert data, "the connection ended early"
        into.append(data)
        received += len(data)


@pytest.mark.parametrize("attempt", range(5))
async def test_what_is_owed_continues_the_stream_where_the_stopped_transport_left_it(
    attempt: int,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listening:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(listening.getsockname())
        server, _ = listening.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with client:
        client.settimeout(WAIT)
        transport, stream = await _transport_holding_bytes(client, server)
        fd = transport.get_extra_info("socket").fileno()
        unsent = stream[len(stream) - transport.get_write_buffer_size() :]
        taken = bytes_taken(fd)
        assert taken is not None
        protocol = _Protocol()
        held = HeldTransport(protocol, socket.socket(fileno=os.dup(fd)), unsent, taken, 1 << 24)
        # The client reads from now on: the stopped transport may still write meanwhile.
        chunks: list[bytes] = []
        reader = threading.Thread(target=_read, args=(client, len(stream) + 4, chunks))
        reader.start()
        held.stand_in(transport)
        assert held.owed() is None  # not gone yet: not known yet
        held.write(b"more")
        async with asyncio.timeout(WAIT):
            await held.gone.wait()
        owed = held.owed()
        assert owed is not None
        assert owed.endswith(b"more")
        sock = held.get_extra_info("socket")
        sock.setblocking(False)  # as the duplicate's descriptor is already (shared flags)
        await asyncio.get_running_loop().sock_sendall(sock, owed)
        await asyncio.to_thread(reader.join, WAIT)
        assert b"".join(chunks) == stream + b"more"
        held.abort()
        async with asyncio.timeout(WAIT):
            await protocol.lost.wait()


async def test_past_its_bound_a_held_transport_pauses_its_protocol_once() -> None:
    protocol = _Protocol()
    left, right = socket.socketpair()
    with right:
        held = HeldTransport(protocol, left, b"12345", 0, high=10)
        held.write(b"abcd")
        assert protocol.paused == 0
        held.write(b"ef")
        held.write(b"gh")
        assert protocol.paused == 1
        assert held.get_write_buffer_size() == 13
        held.abort()
        assert held.is_closing()
        async with asyncio.timeout(WAIT):
            await protocol.lost.wait()
        assert left.fileno() == -1  # its socket is closed


def test_a_connection_owed_the_most_fits_in_a_handoff_message() -> None:
    assert OWED_BYTES_LIMIT * 4 // 3 + 4096 < MESSAGE_LIMIT / 2
