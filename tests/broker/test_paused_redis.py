"""Broker mode with real relay processes: a Redis paused (SIGSTOP) and resumed."""

from __future__ import annotations

import signal
from typing import Any

import aiohttp
import pytest

from tests.broker.test_broker_cluster import BROKER_TIMING
from tests.harness import Relays
from tests.redis_harness import RedisServer
from tests.support import eventually, notification

pytestmark = pytest.mark.slow


async def test_a_paused_redis_counts_each_message_once(
    relays: Relays, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    """Redis stops answering long enough for both nodes to call it down, then resumes.

    Every browser gets every post once, and ``received`` and the instance's
    ``messages.in`` still count each message of the cluster once (README:
    "received counts every message", "every worker sees every message once").
    """
    cluster = await relays.broker(2, {"url": redis_server.url, **BROKER_TIMING}).start()
    admins = cluster.admins(session)
    browsers = await cluster.browsers("PHID-PAUSE")
    for n in range(3):
        status, _ = await admins[n % 2].post(notification("PHID-PAUSE", unique_id=f"p-{n}"))
        assert status == 200
    seen: list[list[str]] = [[], []]

    async def everyone(count: int) -> bool:
        for index, browser in enumerate(browsers):
            seen[index] += [m["uniqueID"] for m in await browser.drain()]
        return all(len(ids) >= count for ids in seen)

    await eventually(lambda: everyone(3), "every browser has the first posts")
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:

        async def down() -> bool:
            readings = [(await admin.status())["broker"] for admin in admins]
            return all(r["state"] == "down" for r in readings)

        await eventually(down, "both nodes saw Redis go")
        for n in range(3, 6):
            status, _ = await admins[n % 2].post(notification("PHID-PAUSE", unique_id=f"p-{n}"))
            assert status == 200
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)

    async def back() -> bool:
        readings = [(await admin.status())["broker"] for admin in admins]
        return all(r["state"] == "up" and r["queue"] == 0 for r in readings)

    await eventually(back, "both nodes are back with nothing queued")
    await eventually(lambda: everyone(6), "every browser has every post")
    for ids in seen:
        assert sorted(ids) == [f"p-{n}" for n in range(6)], seen
    readings: list[dict[str, Any]] = [(await admin.status())["broker"] for admin in admins]
    for browser in browsers:
        assert await browser.drain() == []
        await browser.close()
    # Six messages in the cluster: the reload after the pause reads the first
    # three again, and may read some of the last three as they also come live.
    assert [r["received"] for r in readings] == [6, 6], readings
    # And the instance's messages.in, which the same copies reach in the hub.
    counts = [(await admin.status("default"))["messages.in"] for admin in admins]
    assert counts == [6, 6], counts
