"""Slow readers in a handoff, in process: they move with the bytes relay owes them.

Both sides of the handoff run in the test's event loop (asyncio's and
uvloop), each watching the other's pid through a stand-in. The browser is
a :class:`~tests.node.slow_reader.SlowReader` (a raw socket with a small
receive buffer that reads only when told) behind which relay's transport
holds bytes. Whoever serves it in the end, it reads one valid stream of
frames, every message once and in order:

- a successor that takes owed bytes adopts it and writes them first;
- a successor of an older release (its ``HELLO`` does not say it takes
  them) is not sent it: the old process keeps it, as before;
- a successor that dies with the batch unacknowledged: the old process
  serves it again, on a new transport that writes what it is owed first;
- one held that does not fit the round's room until the end: served by
  the old process again, the same way.

Scenarios with real processes: ``test_slow_reader.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from relay.config import parse_config
from relay.links.handoff_wire import ConnectionState, Kind, hello_body
from relay.listeners.handoff import Channel
from relay.listeners.movable import MovableConnection, adopt
from relay.node import handoff, handoff_abort, handoff_take
from relay.node.handoff_take import adopt_all, take_over
from relay.node.node import Node
from tests.broker.test_broker import StartNode
from tests.node.handoff_parts import handoff_point, stand_ins
from tests.node.slow_reader import (
    AFTER,
    BEFORE,
    SEND_BUFFER,
    SlowReader,
    publish,
    slow_reader_behind,
)
from tests.support import WAIT, local_config, notification


def _config(**limits: Any) -> dict[str, Any]:
    limits = {"max_connections_per_ip": 0, "socket_send_buffer_bytes": SEND_BUFFER, **limits}
    return local_config(limits=limits)


async def test_an_adopted_connection_is_written_what_it_is_owed_before_anything_else(
    start_node: StartNode,
) -> None:
    node = await start_node(local_config(), connection_factory=MovableConnection)
    with socket.create_server(("127.0.0.1", 0)) as server:
        browser = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    with browser:
        # A frame cut after its first bytes by the old process, and one whole: what it owed.
        owed = b"lo, world" + b"\x81\x02hi"
        state = ConnectionState(0, "127.0.0.1", "default", ("K",), False, 0.0, owed=owed)
        await adopt(node.client_listeners[0], state, accepted.detach())
        publish(node, ["after"])
        expected = len(owed) + 2 + len(orjson.dumps(notification("K", unique_id="after")))
        received = b""
        loop = asyncio.get_running_loop()
        browser.setblocking(False)
        async with asyncio.timeout(WAIT):
            while len(received) < expected:
                received += await loop.sock_recv(browser, 65536)
        assert received.startswith(owed)
        frame = received[len(owed) :]
        assert frame[:1] == b"\x81"  # a text frame follows, whole
        assert orjson.loads(frame[2:])["uniqueID"] == "after"


def _owed_moved(caplog: pytest.LogCaptureFixture) -> str:
    return caplog.text.split("handoff done: ", 1)[1].split("\n", 1)[0]


async def _slow_reader_on_old_node(
    start_node: StartNode,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    **limits: Any,
) -> tuple[Node, SlowReader]:
    """An old node (stand-ins for the handoff's processes) and a slow reader it owes bytes."""
    stand_ins(monkeypatch, handoff_abort, handoff_take)
    caplog.set_level(logging.INFO, "relay.handoff")
    old = await start_node(_config(**limits), connection_factory=MovableConnection)
    return old, await slow_reader_behind(old)


async def _served_whole(node: Node, reader: SlowReader) -> None:
    """``node`` serves ``reader`` on: it reads every post once, in order, and no close."""
    publish(node, AFTER)
    assert await reader.read_until(AFTER[-1]) == BEFORE + AFTER
    assert reader.closed is None
    reader.close()


async def test_a_successor_adopts_a_slow_reader_and_writes_what_it_is_owed_first(
    start_node: StartNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    old, reader = await _slow_reader_on_old_node(start_node, monkeypatch, caplog)
    async with handoff_point(old, tmp_path) as (point, path):
        successor, channel, resumption = await take_over(parse_config(_config()), path)
        try:
            async with asyncio.timeout(WAIT):
                await adopt_all(successor, channel, resumption)
            assert point._task is not None
            await asyncio.wait_for(point._task, WAIT)
            assert _owed_moved(caplog).startswith("1 browser connections moved (1 with ")
            publish(successor, AFTER)
            assert await reader.read_until(AFTER[-1]) == BEFORE + AFTER
            assert reader.closed is None
            assert successor.adopted == 1
        finally:
            channel.close()
            await successor.stop()
    reader.close()


async def test_a_successor_of_an_older_release_is_not_sent_a_slow_reader(
    start_node: StartNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It would drop the owed bytes it does not know: the old process keeps the browser."""
    older = {"admin_connections": True}
    monkeypatch.setattr(
        handoff_take,
        "hello_body",
        lambda version, pid, _pidfile=None: {"version": version, "pid": pid} | older,
    )
    old, reader = await _slow_reader_on_old_node(
        start_node, monkeypatch, caplog, handshake_seconds=0.5
    )
    async with handoff_point(old, tmp_path) as (point, path):
        successor, channel, resumption = await take_over(parse_config(_config()), path)
        try:
            async with asyncio.timeout(WAIT):
                await adopt_all(successor, channel, resumption)
            assert point._task is not None
            await asyncio.wait_for(point._task, WAIT)
            assert _owed_moved(caplog) == "0 browser connections moved"
            assert successor.adopted == 0
        finally:
            channel.close()
            await successor.stop()
    # Still the old process' (which would close it with 1001 as it exits, as before).
    await _served_whole(old, reader)


async def test_a_slow_reader_cut_for_a_successor_that_dies_is_served_again_whole(
    start_node: StartNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    old, reader = await _slow_reader_on_old_node(start_node, monkeypatch, caplog)
    async with handoff_point(old, tmp_path) as (point, path):
        # The successor by hand: it takes the batch, then dies before acknowledging it.
        channel = await Channel.connect(path)
        try:
            channel.send(Kind.HELLO, hello_body("9.9.9", os.getpid()))
            while True:
                kind, body, fds = await channel.receive()
                for fd in fds:
                    os.close(fd)  # its copies only: the old process keeps its own
                if kind is Kind.CONNECTIONS:
                    [record] = cast(list[dict[str, str]], body["connections"])
                    assert record["o"]  # what it is owed came with it
                    break
        finally:
            channel.close()
        assert point._task is not None
        await asyncio.wait_for(point._task, WAIT)
    assert "after the failed handoff: 0 connections had moved, 1 resumed here" in caplog.text
    await _served_whole(old, reader)


async def test_a_held_slow_reader_that_never_fits_a_round_is_served_here_again(
    start_node: StartNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(handoff, "ROUND_OWED_BYTES", 1)  # no round has room for it
    old, reader = await _slow_reader_on_old_node(
        start_node, monkeypatch, caplog, handshake_seconds=0.5
    )
    async with handoff_point(old, tmp_path) as (point, path):
        successor, channel, resumption = await take_over(parse_config(_config()), path)
        try:
            async with asyncio.timeout(WAIT):
                await adopt_all(successor, channel, resumption)
            assert point._task is not None
            await asyncio.wait_for(point._task, WAIT)
        finally:
            channel.close()
            await successor.stop()
    assert "1 browser connections were held and did not move" in caplog.text
    assert _owed_moved(caplog) == "0 browser connections moved"
    await _served_whole(old, reader)
