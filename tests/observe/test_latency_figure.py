"""The charts' latency figure counts only posts that reached a browser; Prometheus counts all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import orjson

from relay.links.peer_batch import encode_batch, encode_record
from relay.node.node import Node
from tests.support import Admin, Browser, eventually, local_config, notification

StartNode = Callable[..., Awaitable[Node]]


async def test_only_posts_that_reached_a_browser_make_the_latency_figure(
    start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    # One announcement, at start; the test takes every later sample itself.
    node = await start_node(local_config(dashboard={"interval_seconds": 3600}))
    admin = Admin(session, node.admin_addresses[0][1])

    async def announced() -> bool:
        return len(node.series) == 1

    await eventually(announced, "the node announces its status once")
    histogram = node.metrics.delivery_latency

    def posts_timed() -> float:
        samples = [s for metric in histogram.collect() for s in metric.samples]
        return sum(s.value for s in samples if s.name.endswith("_count"))

    assert (await admin.post(notification("PHID-NOBODY")))[0] == 200
    record = encode_record("default", b"[]", orjson.dumps(notification("PHID-NOBODY")))
    batch = encode_batch([record])
    async with admin.session.post(admin.base + "/peer/batch", data=batch) as response:
        assert response.status == 200
    nobody = node.series.sample(node.snapshot())
    assert (nobody.latency_mean_ms, nobody.latency_max_ms) == (None, None)
    assert posts_timed() == 2  # Prometheus' histogram times every POST, as documented

    browser = await Browser.open(node.client_addresses[0][1])
    await browser.subscribe("PHID-SOMEONE")
    assert (await admin.post(notification("PHID-SOMEONE")))[0] == 200
    assert (await admin.post(notification("PHID-NOBODY")))[0] == 200
    reached = node.series.sample(node.snapshot())
    assert reached.latency_mean_ms is not None
    assert reached.latency_mean_ms == reached.latency_max_ms  # one post, not two
    assert posts_timed() == 4
    await browser.close()
