"""Workers forked from the template process (``relay.workers.spawn``): restarts, sharing, cleanup.

A worker killed with SIGKILL comes back forked from the same template; a
killed template is replaced and workers still restart; a forked worker keeps
much less private memory than a process that imported everything itself;
SIGKILL to the supervisor leaves no worker nor template behind; and with no
template, workers are exec'd as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from pathlib import Path

import orjson
import pytest

from relay.config import load_config
from relay.links.backoff import Backoff
from relay.process.systemd import Notifier
from relay.workers.spawn import TEMPLATE_NAME, Spawner
from relay.workers.supervisor import Supervisor
from tests.harness import Relays, children_of
from tests.redis_harness import RedisServer
from tests.support import WAIT, eventually, local_config

pytestmark = pytest.mark.slow


def _status(pid: int) -> str:
    return Path(f"/proc/{pid}/status").read_text()


def template_of(pid: int) -> int:
    """The pid of the template process among the supervisor ``pid``'s children."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            status = (entry / "status").read_text()
            if re.search(rf"^PPid:\s+{pid}$", status, re.M) and re.search(
                rf"^Name:\s+{TEMPLATE_NAME}$", status, re.M
            ):
                return int(entry.name)
    raise AssertionError(f"no template process under pid {pid}")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: it waits to be reaped)."""
    try:
        return re.search(r"^State:\s+Z", _status(pid), re.M) is None
    except OSError:
        return False


def cmdline(pid: int) -> bytes:
    """The process's command line, its arguments ended by NULs."""
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def forked_from_template(pid: int) -> bool:
    """Whether the worker ``pid`` was forked from the template (it has the template's argv)."""
    return b"relay.cli.template" in cmdline(pid)


def memory(pid: int) -> dict[str, int]:
    """``/proc/pid/smaps_rollup``'s figures, in KiB."""
    figures = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        figures[name.rstrip(":")] = int(value)
    return figures


async def test_a_killed_worker_is_forked_again_from_the_same_template(
    relays: Relays, redis_server: RedisServer
) -> None:
    [node] = await relays.broker(1, redis_server.url, workers=2).start()
    template = template_of(node.pid)
    workers = children_of(node.pid)
    assert len(workers) == 2
    assert all(forked_from_template(pid) for pid in workers)
    killed = max(workers)
    os.kill(killed, signal.SIGKILL)
    await asyncio.to_thread(node.wait_for_log, r"was killed by SIGKILL; restarting it")
    await asyncio.to_thread(node.wait_for_log, r"serves again")
    [new] = children_of(node.pid) - workers
    assert forked_from_template(new)
    assert template_of(node.pid) == template  # the current template, not a new one
    assert "by exec instead" not in node.log


async def test_a_killed_template_is_replaced_and_workers_still_restart(
    relays: Relays, redis_server: RedisServer
) -> None:
    [node] = await relays.broker(1, redis_server.url, workers=2).start()
    template = template_of(node.pid)
    os.kill(template, signal.SIGKILL)
    workers = children_of(node.pid)
    assert len(workers) == 2  # the workers serve on without it
    killed = min(workers)
    os.kill(killed, signal.SIGKILL)
    await asyncio.to_thread(node.wait_for_log, r"serves again")
    assert f"the template process (pid {template}) exited" in node.log
    [new] = children_of(node.pid) - workers
    assert forked_from_template(new)
    assert template_of(node.pid) != template
    assert "by exec instead" not in node.log


async def test_a_forked_worker_keeps_far_less_private_memory_than_an_exec_d_process(
    relays: Relays, redis_server: RedisServer
) -> None:
    [lone] = await relays.broker(1, redis_server.url).start()
    [node] = await relays.broker(1, redis_server.url, workers=2).start()
    exec_d = memory(lone.pid)
    for worker in children_of(node.pid):
        forked = memory(worker)
        # Measured: ~44 MiB private for the exec'd one, ~10-20 for a forked one.
        assert forked["Private_Dirty"] < exec_d["Private_Dirty"] * 0.6, (forked, exec_d)
        assert forked["Pss"] < exec_d["Pss"] * 0.6, (forked, exec_d)
        assert forked["Shared_Dirty"] > 10 * 1024  # the template's pages, written before the fork


async def test_no_process_is_left_behind_when_the_supervisor_is_killed(
    relays: Relays, redis_server: RedisServer
) -> None:
    [node] = await relays.broker(1, redis_server.url, workers=2).start()
    processes = {*children_of(node.pid), template_of(node.pid)}
    assert len(processes) == 3
    node.signal(signal.SIGKILL)  # the supervisor alone, not its process group
    assert await asyncio.to_thread(node.wait) == -signal.SIGKILL

    async def gone() -> bool:
        return not any(alive(pid) for pid in processes)

    await eventually(gone, "the workers and the template end with their supervisor")


async def test_workers_are_exec_d_when_no_template_starts(
    tmp_path: Path,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_template(self: Spawner) -> None:
        return None

    monkeypatch.setattr(Spawner, "_start_template", no_template)
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(local_config(workers=2, broker={"url": redis_server.url})))
    supervisor = Supervisor(
        load_config(path), str(path), count=2, systemd=Notifier({}), backoff=Backoff
    )
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="relay.workers"):
        running = asyncio.create_task(supervisor.run(stop))
        try:
            async with asyncio.timeout(WAIT):
                await supervisor.up.wait()
            for pid in supervisor.pids:
                assert pid is not None
                assert b"relay\x00serve\x00" in cmdline(pid)
        finally:
            stop.set()
            await running
    assert "worker 1: no template process; starting it by exec instead" in caplog.text
