"""The status page in headless Chromium while the test breaks the Phorge cluster.

The page stays open: traffic moving the charts, the database going unhealthy
and a repository falling out of sync must appear on it without a reload.
With RELAY_UPDATE_SCREENSHOT=1 the final page is also saved as
docs/status-page-1400.png and docs/status-page-800.png (1400 and 800 px
wide, 1000 high) for the README.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from relay.node.node import Node
from tests.chromium import Chromium
from tests.cluster_status.helpers import MONITOR_PASSWORD, MONITOR_USER, host_entry
from tests.cluster_status.phorge_tables import PhorgeTables
from tests.mariadb_harness import MariaDBServer
from tests.status_page import chart, screenshots
from tests.support import Admin, Browser, eventually, local_config, notification

pytestmark = pytest.mark.slow

StartNode = Callable[..., Awaitable[Node]]


async def test_the_page_shows_the_master_failing_and_a_repository_desynchronising(
    pair: tuple[MariaDBServer, MariaDBServer],
    phorge: PhorgeTables,
    start_node: StartNode,
    chromium: Chromium,
    session: aiohttp.ClientSession,
) -> None:
    master, replica = pair
    repository, devices = phorge.synchronized_service("repos001", "Demo")
    config = local_config(
        # Charts of the last 30 s: this scenario is over in less than a minute.
        dashboard={"interval_seconds": 0.5, "chart_seconds": 30},
        cluster_status={
            "databases": [host_entry(master, "master"), host_entry(replica, "replica")],
            "repository": {
                "host": "127.0.0.1",
                "port": phorge.server.port,
                "user": MONITOR_USER,
                "pass": MONITOR_PASSWORD,
            },
            "namespace": phorge.ns,
            "database_interval_seconds": 0.1,
            "repository_interval_seconds": 0.2,
            "connect_timeout_seconds": 1,
            "query_timeout_seconds": 1,
        },
    )
    node = await start_node(config)
    tab = await chromium.open(f"http://127.0.0.1:{node.admin_addresses[0][1]}/dashboard/")

    async def shows(*texts: str) -> bool:
        text = await chromium.text(tab)
        return all(t in text for t in texts)

    async def healthy() -> bool:
        return await shows("live", "mode: read-write", "Synchronized", "rDEMO")

    await eventually(healthy, "the page shows a healthy cluster")
    assert not await shows("unhealthy")
    databases_before = await chart(chromium, tab, "databases")
    assert databases_before["last"] == "2"  # both hosts healthy

    # Traffic: posts to a subscribed browser move the rate, delivery and latency charts.
    quiet = await chart(chromium, tab, "rate_in")
    browser = await Browser.open(node.client_addresses[0][1])
    await browser.subscribe("PHID-CHART")
    admin = Admin(session, node.admin_addresses[0][1])

    async def post_some() -> None:
        for n in range(200):
            status, _ = await admin.post(notification("PHID-CHART", n=n))
            assert status == 200
            await asyncio.sleep(0.01)  # a steady trickle over about two seconds

    posting = asyncio.create_task(post_some())

    async def charts_move() -> bool:
        rate_in = await chart(chromium, tab, "rate_in")
        deliveries = await chart(chromium, tab, "rate_out")
        latency = await chart(chromium, tab, "latency")
        return (
            rate_in["samples"] > quiet["samples"]
            and rate_in["line"] != quiet["line"]
            and float(rate_in["last"] or 0) > 0
            and float(deliveries["last"] or 0) > 0
            and float(latency["last"] or 0) > 0
        )

    await eventually(charts_move, "the charts move with the traffic")
    await posting
    assert await chart(chromium, tab, "connections") != {}
    await browser.close()

    master.kill()

    async def master_down() -> bool:
        return await shows("mode: read-only", "unhealthy", "fail")

    await eventually(master_down, "the page shows the master unhealthy and read-only")

    async def health_chart_drops() -> bool:
        return bool((await chart(chromium, tab, "databases"))["last"] == "1")

    await eventually(health_chart_drops, "the database health chart drops to one host")

    newer = phorge.push(repository, epoch=int(time.time()) - 3600)
    phorge.set_version(repository, devices[0], newer)

    async def out_of_sync() -> bool:
        return await shows("Unsynchronized")

    await eventually(out_of_sync, "the page shows the repository out of sync")
    navigations = await chromium.evaluate(tab, "performance.getEntriesByType('navigation').length")
    assert navigations == 1  # all of it arrived over the WebSocket, no reload
    # At the widths the page is laid out for: nothing overlaps or spills over.
    await screenshots(
        chromium, tab, "status-page", save=os.environ.get("RELAY_UPDATE_SCREENSHOT") == "1"
    )
