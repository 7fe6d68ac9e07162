"""Broker mode with real relay processes: a node that served before Redis ever answered it."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import pytest

from tests.broker.test_broker_cluster import BROKER_TIMING
from tests.harness import Relays
from tests.redis_harness import RedisServer
from tests.support import eventually, notification

pytestmark = pytest.mark.slow


async def test_a_node_that_started_while_redis_was_away_gets_what_it_missed(
    relays: Relays, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    """Both nodes start while Redis is away and serve browsers; Redis then comes.

    A post queued on one node is published when its Redis returns; the other
    node, whose first session only starts after that, must deliver it to its
    browser: that node missed it in a gap, it does not predate the node.
    """
    redis_server.kill()  # its port stays recorded: Redis comes back there
    cluster = await relays.broker(2, {"url": redis_server.url, **BROKER_TIMING}).start()
    late, early = cluster
    admins = cluster.admins(session)
    waiting = await late.browser("PHID-LATE")
    local = await early.browser("PHID-LATE")
    status, _ = await admins[1].post(notification("PHID-LATE", unique_id="late-1"))
    assert status == 200
    assert (await local.recv())["uniqueID"] == "late-1"
    # Held still, the late node reaches Redis only after the other one published.
    late.signal(signal.SIGSTOP)
    try:
        await asyncio.to_thread(redis_server.start)

        async def published() -> bool:
            broker: dict[str, Any] = (await admins[1].status())["broker"]
            return bool(broker["state"] == "up" and broker["published"] == 1)

        await eventually(published, "the early node published its queued post")
    finally:
        late.signal(signal.SIGCONT)

    async def late_up() -> bool:
        return bool((await admins[0].status())["broker"]["state"] == "up")

    await eventually(late_up, "the late node reached Redis")
    got: list[str] = []

    async def arrived() -> bool:
        got.extend(m["uniqueID"] for m in await waiting.drain())
        return bool(got)

    await eventually(arrived, "the post reached the late node's browser")
    assert got == ["late-1"]
    assert await local.drain() == []  # and nothing twice where it was posted
    for browser in (waiting, local):
        await browser.close()
