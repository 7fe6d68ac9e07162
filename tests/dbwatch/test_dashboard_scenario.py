"""The status page in headless Chromium while the test breaks the Phorge cluster.

The page stays open: the database going unhealthy and a repository falling
out of sync must appear on it without a reload. With RELAY_UPDATE_SCREENSHOT=1
the final page is also saved as docs/status-page.png for the README.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from relay.node import Node
from tests.chromium import Chromium
from tests.dbwatch.helpers import MONITOR_PASSWORD, MONITOR_USER, host_entry
from tests.dbwatch.phorge_tables import PhorgeTables
from tests.mariadb_harness import MariaDBServer
from tests.support import eventually, local_config

pytestmark = pytest.mark.slow

StartNode = Callable[..., Awaitable[Node]]
SCREENSHOT = Path(__file__).parent.parent.parent / "docs" / "status-page.png"


async def test_the_page_shows_the_master_failing_and_a_repository_desynchronising(
    pair: tuple[MariaDBServer, MariaDBServer],
    phorge: PhorgeTables,
    start_node: StartNode,
    chromium: Chromium,
) -> None:
    master, replica = pair
    repository, devices = phorge.synchronized_service("repos001", "Demo")
    config = local_config(
        dashboard={"interval_seconds": 0.5},
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

    master.kill()

    async def master_down() -> bool:
        return await shows("mode: read-only", "unhealthy", "fail")

    await eventually(master_down, "the page shows the master unhealthy and read-only")

    newer = phorge.push(repository, epoch=int(time.time()) - 3600)
    phorge.set_version(repository, devices[0], newer)

    async def out_of_sync() -> bool:
        return await shows("Unsynchronized")

    await eventually(out_of_sync, "the page shows the repository out of sync")
    navigations = await chromium.evaluate(tab, "performance.getEntriesByType('navigation').length")
    assert navigations == 1  # all of it arrived over the WebSocket, no reload
    picture = await chromium.screenshot(tab)
    assert picture.startswith(b"\x89PNG")
    if os.environ.get("RELAY_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(picture)
