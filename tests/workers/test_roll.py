"""Upgrading a ``--workers`` node without disconnecting anyone: SIGUSR2 to the supervisor.

Real processes on a real redis-server: a supervisor and two workers running a
checkout of relay, browsers spread over both workers, posts at ``RATE`` a
second throughout. The checkout is then upgraded in place (a new version
string) and the supervisor told to replace its workers; each worker hands its
sockets and browsers to its successor in turn. ``RELAY_HANDOFF_BROWSERS``
raises the browser count.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.broker.test_broker_cluster import BROKER_TIMING
from tests.harness import Relays
from tests.harness.checkout import second_checkout, set_version
from tests.harness.node import POLL, START_WAIT
from tests.node.handoff_parts import RATE, Poster, close_all, connect_many, post_over
from tests.redis_harness import RedisServer
from tests.support import eventually
from tests.workers.test_acceptance import status

pytestmark = pytest.mark.slow

BROWSERS = int(os.environ.get("RELAY_HANDOFF_BROWSERS", "200"))
OLD_VERSION = "0.1.0+workers-before"
NEW_VERSION = "0.1.0+workers-after"
#: Admin connections opened before the roll, silent through it.
POOLED = 20


async def _workers(port: int) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        workers: list[dict[str, Any]] = (await status(session, port))["workers"]
    return workers


@pytest.mark.timeout(180)
async def test_sigusr2_replaces_each_worker_in_turn_and_disconnects_no_one(
    relays: Relays, redis_server: RedisServer, tmp_path: Path
) -> None:
    checkout_dir = tmp_path / "checkout"
    checkout = second_checkout(checkout_dir, OLD_VERSION)
    [node] = await relays.broker(
        1,
        {"url": redis_server.url, **BROKER_TIMING},
        workers=2,
        env=checkout,
        # Room for the pooled admin connections, silent through the roll.
        limits={"max_connections_per_ip": 0, "admin_header_seconds": 30.0},
    ).start()
    watchers = await connect_many(node.client_port, BROWSERS)

    async def spread() -> bool:
        counts = [worker.get("connections", 0) for worker in await _workers(node.admin_port)]
        return sum(counts) == BROWSERS and all(counts)

    await eventually(spread, "the browsers are spread over both workers")
    before = await _workers(node.admin_port)
    assert [worker["version"] for worker in before] == [OLD_VERSION, OLD_VERSION]
    old_pids = {worker["pid"] for worker in before}
    poster = Poster(node.admin_port)
    # Application servers' pools, opened before the roll and used after it.
    pooled = [socket.create_connection(("127.0.0.1", node.admin_port)) for _ in range(POOLED)]
    set_version(checkout_dir, NEW_VERSION)  # the package upgraded in place
    node.signal(signal.SIGUSR2)
    deadline = time.monotonic() + 2 * START_WAIT
    while "all 2 workers replaced by the new code" not in node.log:
        assert "upgrade of the workers stopped" not in node.log
        assert time.monotonic() < deadline, "the workers were not replaced in time"
        await asyncio.sleep(POLL)  # a log line, which nothing can be told about
    await asyncio.sleep(10 / RATE)  # a few more posts, to the new workers alone
    await poster.stop()
    # Each old worker passed those it had accepted to its successor, which answers them.
    passed = re.findall(r"(\d+) admin connections with no request yet passed on", node.log)
    assert sum(map(int, passed)) >= POOLED
    for number, sock in enumerate(pooled):
        with sock:
            assert await asyncio.to_thread(post_over, sock, f"pooled{number}") == 200
    posted = poster.posted + [f"pooled{number}" for number in range(POOLED)]

    # A post is answered once Redis has it; it reaches browsers when Redis returns it.
    async def delivered() -> bool:
        return all(watcher.ids[-1:] == posted[-1:] for watcher in watchers)

    await eventually(delivered, "every browser got the last post")
    for watcher in watchers:
        await watcher.sync()  # anything more (a duplicate) would have come by now
    assert not poster.failures
    for watcher in watchers:
        assert watcher.ended is None
        assert watcher.ids == posted
    after = await _workers(node.admin_port)
    assert [worker["version"] for worker in after] == [NEW_VERSION, NEW_VERSION]
    assert not old_pids & {worker["pid"] for worker in after}
    assert [worker["restarts"] for worker in after] == [0, 0]  # replaced, not restarted
    assert sum(worker["connections"] for worker in after) == BROWSERS
    assert node.running  # the supervisor itself keeps running (its old code)
    assert "was killed" not in node.log
    assert "exited with" not in node.log
    # Each handoff ended cleanly: no old worker took it for a failed one (a
    # 100k roll once saw a reset channel, and the old worker serve again),
    # and each exited by itself.
    assert node.log.count("handoff done: ") == 2
    for problem in ("handoff failed", "handoff channel failed", "did not exit in"):
        assert problem not in node.log
    await close_all(watchers)


@pytest.mark.timeout(180)
async def test_a_successor_that_fails_stops_the_roll_and_the_worker_keeps_serving(
    relays: Relays, redis_server: RedisServer, tmp_path: Path
) -> None:
    checkout_dir = tmp_path / "checkout"
    checkout = second_checkout(checkout_dir, OLD_VERSION)
    [node] = await relays.broker(
        1, {"url": redis_server.url, **BROKER_TIMING}, workers=2, env=checkout
    ).start()
    watchers = await connect_many(node.client_port, 20)
    before = await _workers(node.admin_port)
    init = checkout_dir / "relay" / "__init__.py"
    working = init.read_text()
    init.write_text(working + "\nraise SystemExit(3)  # a broken upgrade\n")
    poster = Poster(node.admin_port)
    node.signal(signal.SIGUSR2)
    deadline = time.monotonic() + 2 * START_WAIT
    while "upgrade of the workers stopped at worker 0: 0 of 2 replaced" not in node.log:
        assert time.monotonic() < deadline, "the failed roll was not logged in time"
        await asyncio.sleep(POLL)  # a log line, which nothing can be told about
    assert "exited with status 3 before it took over; the worker keeps serving" in node.log
    assert [worker["pid"] for worker in await _workers(node.admin_port)] == [
        worker["pid"] for worker in before
    ]
    # Fixed: another SIGUSR2 starts over, and goes through.
    set_version(checkout_dir, NEW_VERSION)
    init.write_text(init.read_text().replace("\nraise SystemExit(3)  # a broken upgrade\n", ""))
    node.signal(signal.SIGUSR2)
    while "all 2 workers replaced by the new code" not in node.log:
        assert time.monotonic() < deadline + START_WAIT, "the workers were not replaced in time"
        await asyncio.sleep(POLL)
    await poster.stop()
    posted = poster.posted

    async def delivered() -> bool:
        return all(watcher.ids[-1:] == posted[-1:] for watcher in watchers)

    await eventually(delivered, "every browser got the last post")
    for watcher in watchers:
        await watcher.sync()
    assert not poster.failures
    for watcher in watchers:
        assert watcher.ended is None
        assert watcher.ids == posted
    after = await _workers(node.admin_port)
    assert [worker["version"] for worker in after] == [NEW_VERSION, NEW_VERSION]
    assert "was killed" not in node.log
    await close_all(watchers)


@pytest.mark.timeout(120)
async def test_a_node_stopped_during_a_roll_leaves_no_process_behind(
    relays: Relays, redis_server: RedisServer
) -> None:
    [node] = await relays.broker(1, {"url": redis_server.url, **BROKER_TIMING}, workers=2).start()
    workers = node.children()
    node.signal(signal.SIGUSR2)
    await asyncio.to_thread(node.wait_for_log, r"started the new code \(pid \d+\) to take over")
    successor = int(re.findall(r"started the new code \(pid (\d+)\)", node.log)[0])
    node.signal(signal.SIGTERM)
    assert await asyncio.to_thread(node.wait) == 0
    for pid in (*workers, successor):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.timeout(120)
async def test_systemd_is_told_of_a_roll_and_a_sighup_during_it_reloads_once_it_ends(
    relays: Relays, redis_server: RedisServer
) -> None:
    [node] = await relays.broker(1, {"url": redis_server.url, **BROKER_TIMING}, workers=2).start()

    def told(prefix: str) -> str:
        return node.next_notice(lambda text: text.startswith(prefix))

    node.signal(signal.SIGUSR2)
    # systemctl reload waits for READY=1 from here (Type=notify-reload wants the time too).
    await asyncio.to_thread(told, "RELOADING=1\nMONOTONIC_USEC=")
    node.signal(signal.SIGHUP)  # while the first successor starts
    await asyncio.to_thread(node.wait_for_log, "this reload follows once it ends")
    await asyncio.to_thread(told, "READY=1")
    assert "all 2 workers replaced by the new code" in node.log  # READY=1 once the roll ended
    await asyncio.to_thread(told, "RELOADING=1\nMONOTONIC_USEC=")  # then the reload
    await asyncio.to_thread(told, "READY=1")
    await asyncio.to_thread(node.wait_for_log, r"\[worker \d\]: configuration reloaded", 2)
    # In that order: the reload waited for the roll. (Read at the end: the reload
    # follows the roll's READY=1 at once, so a look at the log in between races it.)
    log = node.log
    reloaded = re.search(r"\[worker \d\]: configuration reloaded", log)
    assert reloaded is not None
    replaced = log.index("all 2 workers replaced by the new code")
    assert replaced < log.index("forwarding the reload to 2 workers") < reloaded.start()
    assert "not every worker finished its reload" not in node.log
    # A successor is in its slot once it said READY=1: before, a SIGHUP would kill it.
    assert "was killed" not in node.log
