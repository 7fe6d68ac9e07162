"""The cluster-status lease on a real redis-server: one holder, hand-over, fenced verdicts."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis

from relay.broker.status_lease import StatusLease
from relay.config.broker import BrokerConfig
from relay.links.lease_wire import VERDICT_SCRIPT, LeaseKeys, SharedVerdict, holder_value
from tests.redis_harness import RedisServer
from tests.support import WAIT


class Node:
    """One competitor: its lease, the verdicts it heard, its holding episodes."""

    def __init__(self, config: BrokerConfig, name: str) -> None:
        self.heard: list[SharedVerdict] = []
        self.news = asyncio.Event()
        self.tokens: list[int] = []
        self.acquired = asyncio.Event()
        self.lost = asyncio.Event()
        self.lease = StatusLease(
            config,
            name,
            0.6,
            on_verdict=self._hear,
            on_acquire=self._acquire,
            on_lose=self._lose,
        )

    def _hear(self, verdict: SharedVerdict) -> None:
        self.heard.append(verdict)
        self.news.set()

    async def _acquire(self, token: int, _stored: dict[str, SharedVerdict]) -> None:
        self.tokens.append(token)
        self.lost.clear()
        self.acquired.set()

    async def _lose(self) -> None:
        self.acquired.clear()
        self.lost.set()


def message(unique_id: str) -> dict[str, object]:
    return {"type": "relay.cluster.databases", "uniqueID": unique_id, "data": {}}


async def test_one_holder_hands_over_on_stop_and_a_stale_one_cannot_publish(
    redis_server: RedisServer,
) -> None:
    config = BrokerConfig(url=redis_server.url, timeout_seconds=0.5)
    first, second = Node(config, "first"), Node(config, "second")
    await first.lease.start()
    async with asyncio.timeout(WAIT):
        await first.acquired.wait()
    await second.lease.start()
    [token] = first.tokens
    first.lease.publish(SharedVerdict(token, 1, "d", message("m-1")))

    async def heard_by_second() -> None:
        while not any(v.message["uniqueID"] == "m-1" for v in second.heard):
            second.news.clear()
            await second.news.wait()

    async with asyncio.timeout(WAIT):
        await heard_by_second()
    assert not second.lease.holding
    assert first.lease.holding

    await first.lease.stop()
    async with asyncio.timeout(WAIT):
        await second.acquired.wait()
    assert second.tokens[0] > token
    # The first holder's writes are refused in Redis itself from now on.
    keys = LeaseKeys(config.prefix)
    client = aioredis.Redis.from_url(config.url)
    stale = SharedVerdict(token, 2, "d", message("m-stale")).encode()
    refused = await client.eval(
        VERDICT_SCRIPT,
        2,
        keys.lease,
        keys.verdicts,
        holder_value("first", token),
        "relay.cluster.databases",
        stale,
        keys.channel,
    )
    assert refused == 0
    await client.aclose()
    await second.lease.stop()


async def test_a_redis_that_comes_back_empty_gives_a_larger_token_than_any_before(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis without persistence restarts with no token counter: tokens must still grow.

    Every node ignores verdicts whose token is below the largest it has seen,
    so a counter starting again from 1 would silence the cluster's status
    until every node restarted.
    """
    caplog.set_level(logging.INFO, logger="relay.broker.lease")
    config = BrokerConfig(url=redis_server.url, timeout_seconds=0.2)
    node = Node(config, "only")
    await node.lease.start()
    async with asyncio.timeout(WAIT):
        await node.acquired.wait()
    [before] = node.tokens

    redis_server.kill()
    async with asyncio.timeout(WAIT):
        await node.lost.wait()
    assert not node.lease.holding
    # Lost to an outage, not to another node: it alone can speak of it.
    assert node.lease.speaks_for_cluster
    assert any("Redis does not answer" in m for m in caplog.messages)

    redis_server.start()  # the same port, and nothing of the old data
    async with asyncio.timeout(WAIT):
        await node.acquired.wait()
    assert node.lease.holding
    assert node.tokens[-1] > before
    assert any("Redis answers again" in m for m in caplog.messages)
    await node.lease.stop()
