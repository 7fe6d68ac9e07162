"""Presence with real relay processes on a real redis-server: every node of a prefix, listed.

Three broker-mode nodes of two workers each list all six workers, on
``/status/`` and in ``relay status --cluster``; a node killed with SIGKILL
turns stale, then gone, within the documented bounds; a node on another
prefix is not listed, and one on the same prefix logs the others at start.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import aiohttp
import orjson
import pytest

from relay.links.presence import GONE_AFTER, STALE_AFTER
from tests.harness import Relays
from tests.redis_harness import RedisServer
from tests.support import WAIT, Admin, eventually

pytestmark = pytest.mark.slow

INTERVAL = 0.5
BROKER = {"presence_interval_seconds": INTERVAL, "timeout_seconds": 0.5}
#: What a loaded test machine may add to a bound: a poll, a slow event loop.
SLACK = 1.0


async def members(admin: Admin) -> list[dict[str, Any]]:
    nodes = (await admin.status())["nodes"]
    return list(nodes["members"])


async def relay_status(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "relay", "status", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


async def test_three_nodes_of_two_workers_list_six_workers_then_a_killed_one_goes(
    relays: Relays, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    cluster = await relays.broker(3, {"url": redis_server.url, **BROKER}, workers=2).start()
    admins = cluster.admins(session)
    browsers = [await node.browser("PHID-PRESENCE") for node in cluster for _ in range(3)]
    browsers += [await cluster[0].browser("PHID-PRESENCE")]
    pids = {node.pid for node in cluster}

    async def everyone_counted() -> bool:
        listed = await members(admins[1])
        return (
            len(listed) == 6
            and all(m["state"] == "fresh" for m in listed)
            and sum(m["browsers"] for m in listed) == len(browsers)
        )

    await eventually(everyone_counted, "node 1 lists six fresh workers and every browser")
    status = await admins[0].status()
    assert isinstance(status["cluster"], list)  # Aphlict's peer list stays as it was
    listed = status["nodes"]["members"]
    assert {int(m["node"].rpartition(":")[2]) for m in listed} == pids
    assert sorted((m["node"], m["worker"]) for m in listed) == sorted(
        (node, worker) for node in {m["node"] for m in listed} for worker in (0, 1)
    )
    assert sum(1 for m in listed if m["self"]) == 1
    totals = status["nodes"]["totals"]
    assert (totals["nodes"], totals["processes"]) == (3, 6)

    # Each process of node 2 reads the others at its own round, so the one
    # that answers may not have read the last count yet: poll as a user would.
    tables: list[subprocess.CompletedProcess[str]] = []

    async def table_counts_everyone() -> bool:
        tables.append(await relay_status("-u", cluster[2].admin_url, "--cluster"))
        assert tables[-1].returncode == 0, tables[-1].stderr
        return f"browsers  {len(browsers)}" in tables[-1].stdout

    await eventually(table_counts_everyone, "relay status --cluster on node 2 counts everyone")
    rows = [line for line in tables[-1].stdout.splitlines() if " fresh " in line]
    assert len(rows) == 6, tables[-1].stdout
    assert all(any(f":{pid} " in row for pid in pids) for row in rows)

    async def json_counts_everyone() -> bool:
        as_json = await relay_status("-u", cluster[2].admin_url, "--cluster", "--json")
        return bool(orjson.loads(as_json.stdout)["totals"]["browsers"] == len(browsers))

    await eventually(json_counts_everyone, "the --json form on node 2 counts everyone")

    killed = f"{cluster[2].pid}"
    for browser in browsers[6:9]:
        await browser.close()
    cluster[2].kill()
    killed_at = time.monotonic()
    seen: dict[str, float] = {}

    async def killed_node_gone() -> bool:
        states = {m["state"] for m in await members(admins[0]) if m["node"].endswith(killed)}
        for state in states:
            seen.setdefault(state, time.monotonic() - killed_at)
        return not states

    await eventually(killed_node_gone, "the killed node is gone from node 0's list")
    gone_after = time.monotonic() - killed_at
    assert "stale" in seen, seen
    # Its last announcement was at most one interval before the kill.
    assert seen["stale"] <= STALE_AFTER * INTERVAL + SLACK
    assert (STALE_AFTER - 1) * INTERVAL - SLACK <= gone_after <= GONE_AFTER * INTERVAL + SLACK
    remaining = await members(admins[0])
    assert len(remaining) == 4
    for browser in browsers:
        await browser.close()


async def test_another_prefix_is_not_listed_and_a_newcomer_logs_who_is_there(
    relays: Relays, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    broker = {"url": redis_server.url, **BROKER}
    production = await relays.broker(2, broker).start()
    staging = await relays.broker(1, {**broker, "prefix": "staging"}).start()
    admins = production.admins(session)

    async def both_listed() -> bool:
        return len(await members(admins[0])) == 2

    await eventually(both_listed, "node 0 lists both production nodes")
    await asyncio.to_thread(
        staging[0].wait_for_log, r"presence: no other node under broker prefix 'staging'"
    )
    assert [m["self"] for m in await members(staging.admins(session)[0])] == [True]
    assert all(
        m["node"].rpartition(":")[2] != str(staging[0].pid) for m in await members(admins[0])
    )

    newcomer = await relays.broker(1, broker).start()
    await asyncio.to_thread(
        newcomer[0].wait_for_log,
        r"presence: 2 other nodes under broker prefix 'relay': ",
    )

    async def three_listed() -> bool:
        return len(await members(admins[1])) == 3

    await eventually(three_listed, "node 1 lists the newcomer")
    await asyncio.to_thread(production[1].wait_for_log, r"presence: node \S+ joined")
    newcomer[0].stop()
    await asyncio.to_thread(production[1].wait_for_log, r"presence: node \S+ left")
    assert len(await members(admins[1])) == 2
