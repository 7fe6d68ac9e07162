"""A handoff with Aphlict's ``pidfile`` in the config: the file follows the node that serves.

Real processes: the old relay (``--handoff-socket``, the pidfile its own) and
its successor (``--take-over``, the same config). The successor accepts a
pidfile naming the very process it takes over from, and writes its own pid
there once the handoff is done; the old process, exiting after it, leaves
the file alone. A handoff that fails leaves the file naming the old process,
which serves on; a pidfile naming some other live relay is refused, as at
any start.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cluster import Cluster, Relays
from tests.harness.node import RelayNode
from tests.node.handoff_parts import RATE, Poster, Watcher, close_all, connect_many, read_status
from tests.support import WAIT, eventually, local_config

#: Enough browsers for several batches to move.
BROWSERS = 40
#: ``limits.handshake_seconds`` of the half-way test: a browser in its handshake
#: holds the handoff open this long, until the test has killed the successor.
HANDSHAKE_SECONDS = 60.0


def _config(pidfile: Path, **limits: Any) -> dict[str, Any]:
    return local_config(pidfile=str(pidfile), limits={"max_connections_per_ip": 0, **limits})


def _node(
    relays: Relays, tmp_path: Path, name: str, config: dict[str, Any], *args: str
) -> RelayNode:
    node = RelayNode(name, tmp_path / name, config, host="127.0.0.1", args=args)
    relays.clusters.append(Cluster("mesh", [node]))  # stopped at the end of the test
    return node


def _successor(relays: Relays, tmp_path: Path, config: dict[str, Any], handoff: str) -> RelayNode:
    return _node(relays, tmp_path, "new", config, "--handoff-socket", handoff, "--take-over")


def _pid_in(pidfile: Path) -> int:
    return int(pidfile.read_text().strip())


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_the_pidfile_names_the_successor_once_it_took_over(
    relays: Relays, tmp_path: Path
) -> None:
    """The successor was refused (the old process named in the file lives): no upgrade at all."""
    pidfile = tmp_path / "run" / "relay.pid"
    handoff = str(tmp_path / "handoff.sock")
    old = _node(relays, tmp_path, "old", _config(pidfile), "--handoff-socket", handoff).start()
    assert _pid_in(pidfile) == old.pid
    watchers = await connect_many(old.client_port, BROWSERS)
    poster = Poster(old.admin_port)
    new = _successor(relays, tmp_path, _config(pidfile), handoff)
    await asyncio.to_thread(new.start)
    assert await asyncio.to_thread(old.wait) == 0
    # Written once the handoff was done, and left alone by the old process' exit.
    assert _pid_in(pidfile) == new.pid
    assert f"pidfile: {pidfile} names this process (pid {new.pid}) now" in new.log
    await asyncio.sleep(10 / RATE)  # a few more posts, to the new process alone
    await poster.stop()
    for watcher in watchers:
        await watcher.sync()
    assert not poster.failures
    for watcher in watchers:
        assert watcher.ended is None
        assert watcher.ids == poster.posted
    status = await read_status(new.admin_port)
    assert status["process"]["pid"] == new.pid
    assert status["clients.active"] == BROWSERS
    await close_all(watchers)
    new.stop()
    assert not pidfile.exists()  # removed at the successor's own exit, as at any stop


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_take_over_that_fails_leaves_the_pidfile_naming_the_old_process(
    relays: Relays, tmp_path: Path
) -> None:
    """The successor is killed half-way: the old process serves on, and the file says so."""
    pidfile = tmp_path / "relay.pid"
    handoff = str(tmp_path / "handoff.sock")
    config = _config(pidfile, handshake_seconds=HANDSHAKE_SECONDS)
    old = _node(relays, tmp_path, "old", config, "--handoff-socket", handoff).start()
    # Accepted first, its upgrade request never comes: the old process waits for it
    # after moving the others, which holds the handoff open half-way.
    late = socket.create_connection(("127.0.0.1", old.client_port))
    watchers = await connect_many(old.client_port, BROWSERS)
    new = _successor(relays, tmp_path, config, handoff)
    new.spawn()  # never ready: it says READY=1 only once the handoff is done
    await asyncio.to_thread(
        old.wait_for_log,
        rf"{BROWSERS} browser connections moved; waiting up to {HANDSHAKE_SECONDS:g} s for 1 ",
    )
    assert _pid_in(pidfile) == old.pid  # not before the handoff is done
    new.kill()
    await asyncio.to_thread(old.wait_for_log, "handoff failed, this process keeps serving")
    assert _pid_in(pidfile) == old.pid
    assert old.running
    # The adopted browsers were lost with the successor; they come back to the old process.
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(watcher.task for watcher in watchers))
    back = await connect_many(old.client_port, BROWSERS)

    async def served() -> bool:
        return int((await read_status(old.admin_port))["clients.active"]) >= BROWSERS

    await eventually(served, "the browsers are back on the old process")
    late.close()
    await close_all(back)
    old.stop()
    assert not pidfile.exists()


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_pidfile_naming_another_live_relay_still_refuses_the_take_over(
    relays: Relays, tmp_path: Path
) -> None:
    """Only the process at the handoff socket may be named in the file."""
    pidfile = tmp_path / "relay.pid"
    other = _node(relays, tmp_path, "other", _config(pidfile)).start()
    handoff = str(tmp_path / "handoff.sock")
    old = _node(relays, tmp_path, "old", _config(tmp_path / "old.pid"), "--handoff-socket", handoff)
    old.start()
    watcher = await Watcher.open(old.client_port)
    new = _successor(relays, tmp_path, _config(pidfile), handoff)
    new.spawn()
    assert await asyncio.to_thread(new.wait) == 1
    assert f"pidfile: {pidfile} says relay is already running as pid {other.pid}" in new.log
    assert _pid_in(pidfile) == other.pid
    await asyncio.to_thread(old.wait_for_log, "handoff failed, this process keeps serving")
    await watcher.sync()
    assert watcher.ended is None  # nobody was disconnected
    assert old.running
    await close_all([watcher])
