"""A successor in a broker-mode handoff announces no cluster-status verdict twice (real Redis).

The old process passes the verdicts it announced; the successor takes them
as heard (``ClusterChecks.already_heard``) before its lease starts, so the
read-back of the last verdicts, which a node does after subscribing, finds
nothing new. A node without them (any other node starting) announces the
last verdict, as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from relay.config import parse_config
from relay.links.lease_wire import LeaseKeys, SharedVerdict
from relay.node.cluster_checks import ClusterChecks
from tests.redis_harness import RedisServer
from tests.support import WAIT, local_config

KIND = "relay.cluster.databases"


def _verdict(seq: int) -> SharedVerdict:
    return SharedVerdict(1, seq, f"d{seq}", {"type": KIND, "uniqueID": f"v{seq}", "data": {}})


def _checks(redis: RedisServer, announced: list[dict[str, Any]]) -> ClusterChecks:
    config = parse_config(
        local_config(
            broker={"url": redis.url, "timeout_seconds": 0.5},
            cluster_status={"databases": [], "repository": {"enabled": False}},
        )
    )
    assert config.cluster_status is not None
    assert config.broker is not None
    return ClusterChecks(
        config.cluster_status,
        config.broker,
        "successor",
        lambda _instance, message: announced.append(message),
    )


async def test_verdicts_passed_in_a_handoff_are_not_announced_again(
    redis_server: RedisServer,
) -> None:
    keys = LeaseKeys("relay")
    client = aioredis.Redis.from_url(redis_server.url)
    # Another node holds the lease (these never check) and announced v1.
    await client.set(keys.lease, "old:1", px=60_000)
    await client.hset(keys.verdicts, KIND, _verdict(1).encode())
    seeded: list[dict[str, Any]] = []
    successor = _checks(redis_server, seeded)
    successor.already_heard([_verdict(1)])
    fresh: list[dict[str, Any]] = []
    other = _checks(redis_server, fresh)
    await successor.start()
    await other.start()
    try:
        # Each hears v2 on its subscription, which it reads only after reading back v1.
        async with asyncio.timeout(WAIT):
            while len(seeded) < 1 or len(fresh) < 2:
                await client.publish(keys.channel, _verdict(2).encode())
                await asyncio.sleep(0.05)  # published again until both subscriptions hear it
        assert [m["uniqueID"] for m in fresh] == ["v1", "v2"]
        assert [m["uniqueID"] for m in seeded] == ["v2"]
    finally:
        await successor.stop()
        await other.stop()
        await client.aclose()
