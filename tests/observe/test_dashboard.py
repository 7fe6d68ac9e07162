"""The live status page, opened in headless Chromium: it updates without a reload."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from relay import __version__
from relay.node.node import Node
from tests.chromium import Chromium
from tests.support import Admin, eventually, free_ports, local_config, notification

pytestmark = pytest.mark.slow

StartNode = Callable[..., Awaitable[Node]]


async def test_page_shows_the_node_and_a_peer_going_down_live(
    start_node: StartNode, chromium: Chromium, session: aiohttp.ClientSession
) -> None:
    dead_port = free_ports(1)[0]
    peer = {"host": "127.0.0.1", "port": dead_port, "protocol": "http"}
    node = await start_node(local_config(cluster=[peer], dashboard={"interval_seconds": 0.2}))
    admin_port = node.admin_addresses[0][1]
    async with session.get(f"http://127.0.0.1:{admin_port}/dashboard/") as response:
        assert response.status == 200
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        page = await response.text()
    assert "http://" not in page.replace("http://127.0.0.1", "")  # no external assets
    tab = await chromium.open(f"http://127.0.0.1:{admin_port}/dashboard/")

    async def shows(*texts: str) -> bool:
        text = await chromium.text(tab)
        return all(t in text for t in texts)

    async def live() -> bool:
        return await shows("live", f"node {node.hub.fingerprint}")

    await eventually(live, "the page is live and names the node")
    assert await shows(f"relay {__version__}, pid {os.getpid()}, started ")
    assert not await shows("down")
    # The page stays open; the peer's failure reaches it over the WebSocket.
    await Admin(session, admin_port).post(notification("PHID-X"))

    async def peer_down() -> bool:
        return await shows(f"http://127.0.0.1:{dead_port}", "down", "cannot connect")

    await eventually(peer_down, "the page shows the peer down")

    # The message waits for the dead peer: the peer-queue chart shows it.
    async def queue_charted() -> bool:
        last = await chromium.evaluate(
            tab, "document.getElementById('chart-peer_queue').dataset.last"
        )
        return bool(last) and float(last) >= 1

    await eventually(queue_charted, "the peer-queue chart shows the queued message")
    navigations = await chromium.evaluate(tab, "performance.getEntriesByType('navigation').length")
    assert navigations == 1  # never reloaded
