"""Fan-out over real sockets: exactly the subscribed browsers get a message, once each."""

from __future__ import annotations

import asyncio

from relay.node.node import Node
from tests.support import Admin, Browser, notification


async def test_a_thousand_browsers_ten_subscribed(node: Node, admin: Admin) -> None:
    port = node.client_addresses[0][1]
    browsers: list[Browser] = []
    for start in range(0, 1000, 100):
        browsers += await asyncio.gather(*(Browser.open(port) for _ in range(start, start + 100)))
    try:
        subscribed = browsers[::100]
        assert len(subscribed) == 10
        await asyncio.gather(
            *(b.subscribe(f"PHID-{i}", "PHID-SHARED") for i, b in enumerate(subscribed))
        )
        status, _ = await admin.post(notification("PHID-SHARED", unique_id="fanout-1"))
        assert status == 200
        received = await asyncio.gather(*(b.drain() for b in browsers))
        got = [i for i, messages in enumerate(received) if messages]
        assert got == list(range(0, 1000, 100))
        assert all([m["uniqueID"] for m in received[i]] == ["fanout-1"] for i in got)
        assert (await admin.status())["messages.out"] == 10
    finally:
        await asyncio.gather(*(b.close() for b in browsers))
