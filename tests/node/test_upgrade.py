"""``systemctl reload`` as an upgrade: SIGUSR2 makes a node start its successor itself.

No systemd here: the harness gives each node a notify socket of its own (a
real unix datagram socket in the test), which receives what systemd would:
the old process' ``RELOADING=1``, then the successor's ``MAINPID=`` and
``READY=1`` (or the old process' own ``READY=1`` after a failed successor).
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from relay.node.upgrade import successor_command, successor_environ
from tests.harness.cluster import Cluster, Relays
from tests.harness.node import RelayNode, run_serve
from tests.node.handoff_parts import RATE, Poster, close_all, connect_many
from tests.support import WAIT, eventually, local_config

BROWSERS = 50


def test_the_successor_runs_the_same_arguments_with_take_over_once() -> None:
    argv = ["/opt/relay/bin/relay", "serve", "-c", "/etc/relay/relay.json", "--handoff-socket", "h"]
    command = successor_command(argv, python="/opt/relay/bin/python")
    assert command == ["/opt/relay/bin/python", "-m", "relay", *argv[1:], "--take-over"]
    # A node that took over itself hands over with the same flag, not a second one.
    again = successor_command([*argv, "--take-over"], python="/opt/relay/bin/python")
    assert again == command


def test_the_successor_pings_the_watchdog_itself() -> None:
    environ = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "17", "NOTIFY_SOCKET": "@n"}
    assert successor_environ(environ) == {"WATCHDOG_USEC": "30000000", "NOTIFY_SOCKET": "@n"}


def _stop(pid: int) -> None:
    """SIGTERM the successor (not the test's child: the old node started it) and see it end."""
    pidfd = os.pidfd_open(pid)
    try:
        os.kill(pid, signal.SIGTERM)
        ended, _, _ = select.select([pidfd], [], [], 2 * WAIT)
        assert ended, f"the successor {pid} did not stop"
    finally:
        os.close(pidfd)


def _reloading(text: str) -> bool:
    """``RELOADING=1`` with its time, as systemd 253 and later want it."""
    return text.startswith("RELOADING=1\nMONOTONIC_USEC=")


def _old_node(relays: Relays, tmp_path: Path) -> RelayNode:
    config = local_config(limits={"max_connections_per_ip": 0})
    args = ("--handoff-socket", str(tmp_path / "handoff.sock"))
    old = RelayNode("old", tmp_path / "old", config, host="127.0.0.1", args=args)
    relays.clusters.append(Cluster("mesh", [old]))  # stopped at the end of the test
    return old.start()


@pytest.mark.slow
async def test_a_successor_that_cannot_start_leaves_the_node_serving(
    relays: Relays, tmp_path: Path
) -> None:
    old = _old_node(relays, tmp_path)
    watchers = await connect_many(old.client_port, 5)
    # The operator broke the config before reloading: the new code refuses to start.
    old.config_path.write_text('{"servers": "not a list"}')
    old.signal(signal.SIGUSR2)
    # systemctl reload waits from here...
    await asyncio.to_thread(old.next_notice, _reloading)
    await asyncio.to_thread(old.wait_for_log, r"exited with status 1; this process keeps serving")
    # ... until the old process, serving on, says it is ready again.
    ready = await asyncio.to_thread(old.next_notice, lambda text: text.startswith("READY=1"))
    assert "MAINPID=" not in ready
    assert old.running
    poster = Poster(old.admin_port)

    async def posted() -> bool:
        return len(poster.posted) >= 5

    await eventually(posted, "five posts are answered")
    await poster.stop()
    for watcher in watchers:
        await watcher.sync()
        assert watcher.ended is None
        assert watcher.ids == poster.posted
    assert not poster.failures
    await close_all(watchers)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_sigusr2_hands_everyone_to_a_successor_that_systemd_follows(
    relays: Relays, tmp_path: Path
) -> None:
    old = _old_node(relays, tmp_path)
    watchers = await connect_many(old.client_port, BROWSERS)
    poster = Poster(old.admin_port)
    old.signal(signal.SIGUSR2)
    await asyncio.to_thread(old.next_notice, _reloading)  # systemctl reload waits from here
    notice = await asyncio.to_thread(old.next_notice, lambda text: "MAINPID=" in text)
    fields = dict(line.split("=", 1) for line in notice.splitlines())
    successor = int(fields["MAINPID"])
    try:
        assert fields["READY"] == "1"
        assert successor != old.pid
        assert await asyncio.to_thread(old.wait) == 0
        await asyncio.sleep(10 / RATE)  # a few more posts, to the successor alone
        await poster.stop()
        for watcher in watchers:
            await watcher.sync()
        assert not poster.failures
        for watcher in watchers:
            assert watcher.ended is None
            assert watcher.ids == poster.posted
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{old.admin_port}/status/") as response,
        ):
            status: dict[str, Any] = await response.json()
        assert (status["process"]["pid"], status["process"]["adopted"]) == (successor, BROWSERS)
        assert f"started the new code (pid {successor}) to take over" in old.log
        await close_all(watchers)
    finally:
        _stop(successor)


@pytest.mark.parametrize(
    ("config", "args", "refusal"),
    [
        ({}, ("--take-over",), "--take-over needs --handoff-socket PATH"),
        (
            {"broker": {"url": "redis://127.0.0.1:1/0"}},
            ("--workers", "2", "--handoff-socket", "h.sock", "--take-over"),
            "a --workers node replaces its workers itself on SIGUSR2",
        ),
    ],
)
def test_serve_refuses_handoffs_it_cannot_do_and_says_why(
    tmp_path: Path, config: dict[str, Any], args: tuple[str, ...], refusal: str
) -> None:
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(local_config(**config)))
    result = run_serve("--config", str(path), *args)
    assert result.returncode == 1
    assert refusal in result.stderr
