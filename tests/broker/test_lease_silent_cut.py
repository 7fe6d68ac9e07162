"""The cluster-status lease when Redis falls silent: its host forgets the connections, or it hangs.

Nothing tells the nodes: no FIN, no RST reaches them. The lease's rounds
notice, since their commands go unanswered; the subscription that brings the
verdicts only listens. On a connection its Redis' host forgot (a reboot, a
NAT's lost state) it would wait until the kernel's keepalive gave up on it,
if ever (redis-py 8 turns TCP keepalive on by default, 30 s idle and three
5 s probes; earlier versions did not): 31 s in this test, during which the
nodes that do not check heard a verdict only when a round read the last
ones back, late, and only the last of each kind. A hung Redis (SIGSTOP)
keeps its connections: checked here too, as the other silent fault.

Redis runs on a host of its own (a network namespace); the test's event
loop, where both competitors run, on another (tests/broker/netns_hosts.py).
Needs root; where the namespaces cannot be made, the test fails saying why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from relay.config.broker import BrokerConfig
from relay.links.lease_wire import LeaseKeys, SharedVerdict
from tests.broker.netns_hosts import REDIS_HOST, BrokerHosts
from tests.broker.test_status_lease import Node, message
from tests.peering.namespaces import Namespaces
from tests.support import WAIT, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

#: The host of the test's own event loop, and so of both competitors.
NODES = 1
BROKER = {
    "timeout_seconds": 0.5,
    "connect_timeout_seconds": 0.5,
    "ping_interval_seconds": 0.25,
    "stale_seconds": 1.5,
    "backoff_initial_seconds": 0.05,
    "backoff_max_seconds": 0.5,
}


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    made = Namespaces(2)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def hosts(tmp_path: Path, namespaces: Namespaces) -> Iterator[BrokerHosts]:
    made = BrokerHosts(tmp_path, namespaces, BROKER)
    try:
        made.start_redis()
        yield made
    finally:
        made.close()


def silence(hosts: BrokerHosts, namespaces: Namespaces, fault: str) -> Callable[[], None]:
    """Make Redis fall silent for every node now, the ``fault`` way; return what ends it."""
    if fault == "redis-hangs":
        hosts.pause_redis()
        return hosts.resume_redis
    namespaces.cut(REDIS_HOST)

    def come_back() -> None:
        # Its host forgot every connection meanwhile (a reboot, a NAT's lost state).
        hosts.forget_connections()
        namespaces.heal(REDIS_HOST)

    return come_back


@pytest.mark.parametrize("fault", ["host-forgets", "redis-hangs"])
async def test_the_verdicts_reach_every_node_again_after_redis_fell_silent(
    hosts: BrokerHosts, namespaces: Namespaces, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Once Redis answers again, every node listens to the verdicts within ``stale_seconds``.

    With a Redis host that forgot the connections, a subscription that only
    listened never learnt it, and Redis counted no listener any more.
    """
    caplog.set_level(logging.WARNING, logger="relay.broker.lease")
    config = BrokerConfig(**hosts.broker)
    channel = LeaseKeys(config.prefix).channel
    with namespaces.entered(NODES):
        observer = aioredis.Redis.from_url(config.url)
        nodes = [Node(config, "first"), Node(config, "second")]

        async def listening() -> int:
            """How many connections Redis has subscribed to the verdicts."""
            try:
                [(_, count)] = await observer.pubsub_numsub(channel)
            except RedisError:
                return -1  # the test's own connection was forgotten too: asked again anew
            return int(count)

        async def both_listen() -> bool:
            return await listening() == 2

        async def one_holds() -> bool:
            return sum(node.lease.holding for node in nodes) == 1

        try:
            for node in nodes:
                await node.lease.start()
            await eventually(one_holds, "one node holds the lease")
            await eventually(both_listen, "both nodes listen to the verdicts")
            [holder] = [node for node in nodes if node.lease.holding]

            come_back = silence(hosts, namespaces, fault)
            async with asyncio.timeout(WAIT):
                await holder.lost.wait()  # the rounds noticed: their commands timed out
            if fault == "host-forgets":
                # A subscription saw the silence, not only the rounds. (The other
                # node's may first fail with a Redis error instead, which the
                # rounds' lines already tell: which one comes first is the
                # machine's timing.)
                await eventually(
                    lambda: said(caplog, "the verdicts' subscription received nothing", 1),
                    "a node gave its subscription up",
                )
            come_back()
            await eventually(one_holds, "a node holds the lease again")
            await eventually(both_listen, "both nodes listen to the verdicts again")

            # Two verdicts in a row reach the other node, the first too: a
            # round reading the last ones back would have given it the second only.
            [holder] = [node for node in nodes if node.lease.holding]
            [other] = [node for node in nodes if node is not holder]
            token = holder.tokens[-1]
            keys = LeaseKeys(config.prefix)
            for order, unique_id in enumerate(("first-after", "second-after"), start=1):
                holder.lease.publish(SharedVerdict(token, order, "d", message(unique_id)))

                async def stored(unique_id: str = unique_id) -> bool:
                    raw = await observer.hget(keys.verdicts, "relay.cluster.databases")
                    return raw is not None and unique_id.encode() in raw

                await eventually(stored, f"Redis holds {unique_id}")

            async def heard_both() -> bool:
                heard = {verdict.message["uniqueID"] for verdict in other.heard}
                return {"first-after", "second-after"} <= heard

            await eventually(heard_both, "the other node heard both verdicts")
        finally:
            for node in nodes:
                await node.lease.stop()
            await observer.aclose()


async def said(caplog: pytest.LogCaptureFixture, text: str, times: int) -> bool:
    """Whether ``text`` was logged at least ``times`` times."""
    return sum(text in record.getMessage() for record in caplog.records) >= times
