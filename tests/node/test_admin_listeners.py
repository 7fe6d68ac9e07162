"""A handoff's admin side in one process: connections with nothing sent yet move to another node.

``take_waiting_admin`` stops a node accepting posts and takes out each plain
connection it has read no byte of; ``AdminListeners.serve`` serves them in
another node, as the successor of a handoff does. Run on asyncio's loop and
on uvloop (the transports differ in how they expose their socket).
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from relay.node.admin_listeners import WaitingConnection
from relay.node.node import Node
from tests.conftest import StartNode
from tests.node.handoff_parts import Watcher, close_all, post_over
from tests.support import WAIT, eventually


def _admin_port(node: Node) -> int:
    return node.admin_addresses[0][1]


async def _accepted(node: Node, count: int) -> None:
    """Wait until ``node``'s admin listener holds ``count`` connections (accepting is async)."""

    async def holds() -> bool:
        server = node.admin._runners[0].server
        return server is not None and len(server.connections) == count

    await eventually(holds, f"the admin listener holds {count} connections")


async def test_only_connections_that_sent_nothing_move_and_the_other_node_answers_them(
    start_node: StartNode,
) -> None:
    old, new = await start_node(), await start_node()
    watcher = await Watcher.open(new.client_addresses[0][1])
    address = ("127.0.0.1", _admin_port(old))
    silent = socket.create_connection(address)
    begun = socket.create_connection(address)
    begun.sendall(b"POST / HTTP/1.1\r\nHost: relay\r\n")  # its request has begun: it stays
    used = socket.create_connection(address)
    used.sendall(b"GET /status/ HTTP/1.1\r\nHost: relay\r\n\r\n")  # keep-alive, answered
    used.settimeout(WAIT)
    assert await asyncio.to_thread(used.recv, 12) == b"HTTP/1.1 200"  # the node is in this loop
    try:
        await _accepted(old, 3)
        taken = await old.take_waiting_admin()
        assert [connection.listener for connection in taken] == [0]
        await new.admin.serve(taken)
        assert await asyncio.to_thread(post_over, silent, "late") == 200
        await watcher.sync()
        assert watcher.ids == ["late"]
        # The two that stayed are still the old node's, and it answers them.
        begun.sendall(b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
        used.sendall(b"GET /status/ HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        assert (await asyncio.to_thread(_read_all, begun)).startswith(b"HTTP/1.1 4")  # "{}"
        # After the rest of its first answer, the second.
        assert b"HTTP/1.1 200" in await asyncio.to_thread(_read_all, used)
    finally:
        for sock in (silent, begun, used):
            sock.close()
        await close_all([watcher])


def _read_all(sock: socket.socket) -> bytes:
    """What ``sock`` receives until its peer closes (blocking: run it in a thread)."""
    sock.settimeout(WAIT)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


async def test_a_connection_accepted_in_the_loop_turn_before_accepting_stops_is_kept(
    node: Node,
) -> None:
    # asyncio's own loop has accepted it two turns on, but not yet made its
    # transport: closing the server then dropped it, unanswered.
    client = socket.create_connection(("127.0.0.1", _admin_port(node)))
    with client:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await node.admin.stop_accepting()
        taken = node.admin.take_untouched()
        assert len(taken) == 1
        taken[0].sock.close()


async def test_a_connection_for_a_listener_this_node_lacks_is_closed_and_logged(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    client, server = socket.socketpair()
    with client:
        with caplog.at_level(logging.WARNING, logger="relay.node"):
            await node.admin.serve([WaitingConnection(3, server)])
        assert "could not serve an admin connection passed on: this process has no admin" in (
            caplog.text
        )
        client.settimeout(WAIT)
        assert client.recv(1) == b""  # closed: its client retries elsewhere


async def test_no_more_are_taken_out_than_asked_for(node: Node) -> None:
    address = ("127.0.0.1", _admin_port(node))
    pooled = [socket.create_connection(address) for _ in range(3)]
    try:
        await _accepted(node, 3)
        await node.admin.stop_accepting()
        taken = node.admin.take_untouched(limit=2)
        assert len(taken) == 2
        await _accepted(node, 1)  # the third stays, served here
        for connection in taken:
            connection.sock.close()
    finally:
        for sock in pooled:
            sock.close()
