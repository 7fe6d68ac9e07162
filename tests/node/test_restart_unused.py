"""systemd passes what it kept to a process that does not use its store: relay drops it all.

A unit switched from one process to ``workers: N`` (or whose ``$FDSTORE`` is
gone) still gets the listening sockets and browsers stored by the last
stop. Kept, the listening sockets would hold the ports the process binds
afresh (EADDRINUSE: the unit would never start again); so relay closes them
and tells systemd to forget them, and the browsers reconnect.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.harness.fdstore import FakeSystemd
from tests.node.handoff_parts import Watcher, close_all, connect_many
from tests.redis_harness import RedisServer
from tests.support import WAIT, free_ports, local_config


def _config(tmp_path: Path, **sections: Any) -> str:
    """Fixed ports: a listening socket still held elsewhere would make the bind fail."""
    client, admin = free_ports(2)
    config = local_config(limits={"max_connections_per_ip": 0}, **sections)
    config["servers"] = [
        {"type": "client", "port": client, "listen": "127.0.0.1"},
        {"type": "admin", "port": admin, "listen": "127.0.0.1"},
    ]
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(config))
    return str(path)


async def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(process.wait, 2 * WAIT)


async def _stored_then_started(
    systemd: FakeSystemd, config: str, *args: str, capacity: int | None = None
) -> tuple[list[Watcher], subprocess.Popen[bytes], dict[str, int]]:
    """Browsers kept in the store by a single process' stop; then ``relay serve ARGS``.

    ``capacity``: the store's size (``$FDSTORE``) from the second start on.
    """
    first = systemd.start("--config", config)
    ports = await systemd.ready()
    watchers = await connect_many(ports["client"], 3)
    assert await _stop(first) == 0
    assert systemd.names().count("b") == 3
    if capacity is not None:
        systemd.capacity = capacity
    second = systemd.start("--config", config, *args)
    assert await systemd.ready() == ports  # bound afresh on the same ports
    return watchers, second, ports


async def _dropped(systemd: FakeSystemd, watchers: list[Watcher], why: str) -> None:
    for watcher in watchers:
        async with asyncio.timeout(WAIT):
            await watcher.task  # each sees its connection end, and would reconnect
        assert watcher.ended is not None
    assert systemd.stored == []  # nothing is passed again at the next start
    log = systemd.log()
    assert f"which relay does not use {why}" in log
    assert "closing them (3 browser connections kept there reconnect)" in log


@pytest.mark.slow
async def test_a_start_without_fdstore_drops_what_systemd_kept(
    systemd: FakeSystemd, tmp_path: Path
) -> None:
    config = _config(tmp_path)
    # $FDSTORE=0 now, while systemd still passes what it kept.
    watchers, second, ports = await _stored_then_started(systemd, config, capacity=0)
    await _dropped(systemd, watchers, "without $FDSTORE")
    again = await Watcher.open(ports["client"])
    await close_all([again])
    assert await _stop(second) == 0


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_supervisor_drops_what_a_single_process_kept(
    systemd: FakeSystemd, redis_server: RedisServer, tmp_path: Path
) -> None:
    config = _config(tmp_path, broker={"url": redis_server.url})
    watchers, supervisor, ports = await _stored_then_started(systemd, config, "--workers", "2")
    await _dropped(systemd, watchers, "under --workers")
    again = await Watcher.open(ports["client"])
    await close_all([again])
    assert await _stop(supervisor) == 0
