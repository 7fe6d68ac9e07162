"""``systemctl restart`` with systemd's file descriptor store: no browser sees the restart.

There is no systemd here: :class:`~tests.harness.fdstore.FakeSystemd` plays
it (a notify socket that keeps what relay stores, and starts the next
process with it at descriptor 3 onwards, as systemd does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from tests.harness.fdstore import FakeSystemd
from tests.harness.node import START_WAIT
from tests.node.handoff_parts import Poster, Watcher, close_all, connect_many, read_status
from tests.support import WAIT, eventually, local_config, notification

#: Browsers on the node when it restarts: more than one SCM_RIGHTS message (253) holds.
BROWSERS = int(os.environ.get("RELAY_RESTART_BROWSERS", "300"))


def _config(tmp_path: Path, **sections: Any) -> str:
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(local_config(limits={"max_connections_per_ip": 0}, **sections)))
    return str(path)


async def _post(port: int, unique: str) -> int:
    body = orjson.dumps(notification("K", unique_id=unique))
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/", data=body) as response,
    ):
        return response.status


async def _open_through_the_gap(port: int) -> Watcher:
    """A browser connecting while no relay runs: its handshake waits for the next start."""
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/", ping_interval=None, open_timeout=START_WAIT
    )
    await ws.send(orjson.dumps({"command": "subscribe", "data": ["K"]}).decode())
    watcher = Watcher(ws)
    await watcher.sync()
    return watcher


async def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(process.wait, 2 * WAIT)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("handoff", [False, True], ids=["plain", "with-handoff-socket"])
async def test_a_restart_keeps_every_browser_and_every_post(
    systemd: FakeSystemd, tmp_path: Path, handoff: bool
) -> None:
    config = _config(tmp_path)
    # With both drop-ins: a reload hands over, a restart keeps the browsers in the store.
    args = ("--handoff-socket", str(tmp_path / "handoff.sock")) if handoff else ()
    started = time.monotonic()
    first = systemd.start("--config", config, *args)
    ports = await systemd.ready()
    watchers = await connect_many(ports["client"], BROWSERS)
    poster = Poster(ports["admin"])

    async def posted(count: int) -> bool:
        return len(poster.posted) >= count

    await eventually(lambda: posted(5), "five posts are answered")
    assert await _stop(first) == 0
    # What systemd keeps: the two listeners, every browser, the state.
    names = systemd.names()
    assert names.count("b") == BROWSERS
    assert sorted(set(names)) == ["b", "relay-admin-0", "relay-client-0", "relay-state"]
    gap_starts = len(poster.posted) + len(poster.failures)
    # A post started while no relay runs: it waits in the admin socket's backlog.
    gap_post = asyncio.create_task(_post(ports["admin"], "gap"))
    # And a browser connecting meanwhile: refused by no one, it waits in the backlog.
    gap_browser = asyncio.create_task(_open_through_the_gap(ports["client"]))
    second = systemd.start("--config", config, *args)
    assert await systemd.ready() == ports  # the same sockets
    assert await gap_post == 200
    newcomer = await gap_browser
    # Posts went on during the gap: they waited in the admin socket's backlog.
    await eventually(lambda: posted(gap_starts + 10), "ten more posts are answered")
    await poster.stop()
    assert not poster.failures
    for watcher in watchers:
        await watcher.sync()
    for watcher in watchers:
        assert watcher.ended is None
        assert watcher.ids.count("gap") == 1
        assert [unique for unique in watcher.ids if unique != "gap"] == poster.posted
    await newcomer.sync()
    assert newcomer.ended is None
    # Subscribed once the new process ran: every post from some point on, in order.
    tail = [unique for unique in newcomer.ids if unique != "gap"]
    assert tail == poster.posted[len(poster.posted) - len(tail) :]
    process = (await read_status(ports["admin"]))["process"]
    assert (process["pid"], process["adopted"]) == (second.pid, BROWSERS)
    assert f"and {BROWSERS} browser connections adopted" in systemd.log()
    assert f"{BROWSERS} browser connections and 2 listeners kept" in systemd.log(0)
    assert systemd.stored == []  # relay asked systemd to forget what it adopted
    # A browser that reconnects now replays what came before the restart too: history moved.
    late = await Watcher.open(ports["client"])
    await late.replay(started)
    await late.sync()
    assert late.ids == watchers[0].ids
    assert "messages of history kept across the restart" in systemd.log()
    await close_all([*watchers, newcomer, late])
    assert await _stop(second) == 0


@pytest.mark.slow
async def test_a_stale_state_closes_the_browsers_and_starts_clean(
    systemd: FakeSystemd, tmp_path: Path
) -> None:
    config = _config(tmp_path)
    first = systemd.start("--config", config)
    ports = await systemd.ready()
    watchers = await connect_many(ports["client"], 5)
    assert await _stop(first) == 0
    # The state is replaced by garbage, as a crash half-way through writing might leave it.
    state = next(fd for name, fd in systemd.stored if name == "relay-state")
    os.ftruncate(state, 0)
    os.pwrite(state, b'{"format": 1, "connections": "nope"}', 0)
    systemd.start("--config", config)
    assert await systemd.ready() == ports  # the listeners are adopted still
    for watcher in watchers:
        async with asyncio.timeout(WAIT):
            await watcher.task  # each sees its connection end, and would reconnect
        assert watcher.ended is not None
    log = systemd.log()
    assert "relay cannot use, starting clean" in log
    assert "without their state: closing them" in log
    assert "and 0 browser connections adopted, 5 stale ones closed" in log
    again = await Watcher.open(ports["client"])
    assert (await read_status(ports["admin"]))["process"]["adopted"] == 0
    await close_all([again])


@pytest.mark.slow
async def test_without_a_store_a_stop_closes_browsers_with_1001(
    systemd: FakeSystemd, tmp_path: Path
) -> None:
    systemd.capacity = 0  # FileDescriptorStoreMax=0: relay does not use the store
    config = _config(tmp_path)
    first = systemd.start("--config", config)
    ports = await systemd.ready()
    watchers = await connect_many(ports["client"], 3)
    assert await _stop(first) == 0
    for watcher in watchers:
        async with asyncio.timeout(WAIT):
            await watcher.task
        assert watcher.ws.close_code == 1001  # going away, as at any stop
    assert systemd.stored == []


@pytest.mark.slow
async def test_browsers_over_the_store_s_capacity_are_closed_with_1001(
    systemd: FakeSystemd, tmp_path: Path
) -> None:
    systemd.capacity = 6  # two listeners, the state, and room for three browsers
    config = _config(tmp_path)
    first = systemd.start("--config", config)
    ports = await systemd.ready()
    watchers = await connect_many(ports["client"], 5)
    assert await _stop(first) == 0
    assert systemd.names().count("b") == 3
    assert "2 more than the store takes are closed" in systemd.log()
    systemd.start("--config", config)
    await systemd.ready()

    async def two_closed() -> bool:
        return sum(watcher.ended is not None for watcher in watchers) == 2

    await eventually(two_closed, "the two browsers not stored see their close")
    closed = [watcher for watcher in watchers if watcher.ws.close_code == 1001]
    assert len(closed) == 2
    kept = [watcher for watcher in watchers if watcher not in closed]
    for watcher in kept:
        await watcher.sync()  # served by the new process
        assert watcher.ended is None
    assert (await read_status(ports["admin"]))["process"]["adopted"] == 3
    await close_all(kept)


def _notified_main_pid(systemd: FakeSystemd) -> int:
    """The pid the last ``MAINPID=`` named: the successor of a reload."""
    for text in reversed(systemd.notices):
        for line in text.splitlines():
            if line.startswith("MAINPID="):
                return int(line.split("=", 1)[1])
    raise AssertionError(f"no MAINPID= among {systemd.notices}")


async def _end(pid: int) -> None:
    """SIGTERM ``pid`` (not the test's child) and wait until it has ended."""
    pidfd = os.pidfd_open(pid)
    try:
        os.kill(pid, signal.SIGTERM)
        ended = asyncio.Event()
        asyncio.get_running_loop().add_reader(pidfd, ended.set)
        try:
            async with asyncio.timeout(2 * WAIT):
                await ended.wait()
        finally:
            asyncio.get_running_loop().remove_reader(pidfd)
    finally:
        os.close(pidfd)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_reload_then_a_restart_keeps_every_browser(
    systemd: FakeSystemd, tmp_path: Path
) -> None:
    config = _config(tmp_path)
    args = ("--config", config, "--handoff-socket", str(tmp_path / "handoff.sock"))
    first = systemd.start(*args)
    ports = await systemd.ready()
    watchers = await connect_many(ports["client"], 50)
    poster = Poster(ports["admin"])
    first.send_signal(signal.SIGUSR2)  # systemctl reload: the handoff
    assert await systemd.ready() == ports
    successor = _notified_main_pid(systemd)
    try:
        assert await asyncio.to_thread(first.wait, 2 * WAIT) == 0
        await _end(successor)  # systemctl restart: the successor stores everything
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(successor, signal.SIGKILL)
    assert systemd.names().count("b") == 50
    third = systemd.start(*args)
    assert await systemd.ready() == ports
    count = len(poster.posted)

    async def more_posts() -> bool:
        return len(poster.posted) >= count + 5

    await eventually(more_posts, "five more posts are answered")
    await poster.stop()
    assert not poster.failures
    for watcher in watchers:
        await watcher.sync()
        assert watcher.ended is None
        assert watcher.ids == poster.posted
    process = (await read_status(ports["admin"]))["process"]
    assert (process["pid"], process["adopted"]) == (third.pid, 50)
    await close_all(watchers)


@pytest.mark.slow
async def test_a_store_of_garbage_is_closed_and_relay_starts_clean(
    systemd: FakeSystemd, tmp_path: Path
) -> None:
    # What no relay stored: a pipe as a listener and as a browser, a UDP socket as the
    # admin listener, a state that is not JSON, and a name relay does not know.
    read_end, write_end = os.pipe()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    state = os.memfd_create("relay-state")
    os.write(state, b"\x00not json")
    other = os.dup(read_end)
    systemd.stored = [
        ("relay-client-0", read_end),
        ("relay-admin-0", udp.detach()),
        ("b", write_end),
        ("relay-state", state),
        ("someone-else", other),
    ]
    systemd.start("--config", _config(tmp_path))
    ports = await systemd.ready()
    assert systemd.stored == []  # relay told systemd to forget it all
    log = systemd.log()
    assert "client listening sockets that do not fit the config: binding afresh" in log
    assert "admin listening sockets that do not fit the config: binding afresh" in log
    assert "relay-state is unreadable" in log
    assert "closing descriptor" in log
    assert "'someone-else': not relay's" in log
    assert "and 0 browser connections adopted, 1 stale ones closed" in log
    late = await Watcher.open(ports["client"])
    assert (await read_status(ports["admin"]))["process"]["adopted"] == 0
    await close_all([late])


@pytest.mark.slow
async def test_browsers_that_cannot_move_are_closed_with_1001_and_the_rest_kept(
    systemd: FakeSystemd, tmp_path: Path
) -> None:
    config = _config(tmp_path, browsers={"compression": True})
    first = systemd.start("--config", config)
    ports = await systemd.ready()
    plain = await connect_many(ports["client"], 3)
    # permessage-deflate: the compressor's context cannot go into the store.
    compressed = await connect_many(ports["client"], 2, compression="deflate")
    assert await _stop(first) == 0
    for watcher in compressed:
        async with asyncio.timeout(WAIT):
            await watcher.task
        assert watcher.ws.close_code == 1001
    assert systemd.names().count("b") == 3
    systemd.start("--config", config)
    await systemd.ready()
    for watcher in plain:
        await watcher.sync()
        assert watcher.ended is None
    assert (await read_status(ports["admin"]))["process"]["adopted"] == 3
    await close_all(plain)
