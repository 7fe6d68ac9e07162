"""``systemctl restart`` of a broker-mode node with systemd's file descriptor store: nothing missed.

Two broker-mode nodes on a real redis-server: ``a`` restarted under the fake
systemd (``tests/harness/fdstore.py``) with browsers on it, ``b`` taking
posts before, during and after ``a``'s gap. ``a`` stores where it stood in
Redis' streams with its browsers; the next ``a`` reads from exactly there,
so every post reaches the kept browsers once, in order.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from relay.links.broker_wire import Keys
from tests.broker.test_broker_cluster import BROKER_TIMING
from tests.harness.cluster import Cluster, Relays
from tests.harness.fdstore import FakeSystemd
from tests.harness.node import RelayNode
from tests.node.handoff_parts import Poster, Watcher, close_all, connect_many
from tests.redis_harness import RedisServer
from tests.support import WAIT, eventually, local_config, notification

BROWSERS = 50


def _broker_config(redis_url: str) -> dict[str, object]:
    return local_config(
        limits={"max_connections_per_ip": 0}, broker={"url": redis_url, **BROKER_TIMING}
    )


async def _post(port: int, unique: str) -> int:
    body = orjson.dumps(notification("K", unique_id=unique))
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/", data=body) as response,
    ):
        return response.status


async def _stream_order(url: str) -> list[str]:
    """The uniqueIDs of the default instance's stream in Redis, in Redis' order."""
    client = aioredis.Redis.from_url(url)
    try:
        entries = await client.xrange(Keys("relay").stream("default"))
    finally:
        await client.aclose()
    assert entries is not None
    return [orjson.loads((fields or {})[b"p"])["uniqueID"] for _id, fields in entries]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("handoff", [False, True], ids=["plain", "with-handoff-socket"])
async def test_a_broker_mode_restart_delivers_what_other_nodes_took_during_the_gap(
    systemd: FakeSystemd, relays: Relays, redis_server: RedisServer, tmp_path: Path, handoff: bool
) -> None:
    # With both drop-ins: a reload hands over, a restart keeps the browsers in the store.
    args = ("--handoff-socket", str(tmp_path / "handoff.sock")) if handoff else ()
    path = tmp_path / "a.json"
    path.write_bytes(orjson.dumps(_broker_config(redis_server.url)))
    other = RelayNode("b", tmp_path / "b", _broker_config(redis_server.url), host="127.0.0.1")
    relays.clusters.append(Cluster("broker", [other]))  # stopped at the end of the test
    other.start()
    began = time.monotonic()
    first = systemd.start("--config", str(path), *args)
    ports = await systemd.ready()
    watchers = await connect_many(ports["client"], BROWSERS)
    poster = Poster(other.admin_port)  # the application server posts to the other node

    async def posted(count: int) -> bool:
        return len(poster.posted) >= count

    await eventually(lambda: posted(5), "five posts to the other node are answered")
    first.send_signal(15)
    assert await asyncio.to_thread(first.wait, 2 * WAIT) == 0
    assert systemd.names().count("b") == BROWSERS
    # The gap: the other node takes posts while no `a` runs...
    gap_from = len(poster.posted)
    await eventually(lambda: posted(gap_from + 5), "five posts during the gap")
    # ... and one waits in `a`'s admin backlog, taken by the next process.
    backlog_post = asyncio.create_task(_post(ports["admin"], "backlog"))
    systemd.start("--config", str(path), *args)
    assert await systemd.ready() == ports
    assert await backlog_post == 200
    after = len(poster.posted)
    await eventually(lambda: posted(after + 5), "five posts after the restart")
    await poster.stop()
    assert not poster.failures
    last = poster.posted[-1]

    async def delivered() -> bool:
        return all(last in watcher.ids for watcher in watchers)

    await eventually(delivered, "every kept browser got the last post")
    for watcher in watchers:
        await watcher.sync()  # anything more (a duplicate) would have come by now
    during = poster.posted[gap_from:after]
    in_redis = await _stream_order(redis_server.url)  # the cluster's one order
    assert in_redis.count("backlog") == 1
    for watcher in watchers:
        assert watcher.ended is None
        assert watcher.ids == in_redis
        assert [unique for unique in watcher.ids if unique != "backlog"] == poster.posted
        assert set(during) <= set(watcher.ids)
    assert "with systemd's file descriptor store" in systemd.log()
    assert f"and {BROWSERS} browser connections adopted" in systemd.log()
    assert "reading the broker's streams from where the old process stopped" in systemd.log()
    assert "did not come back from Redis" not in systemd.log(0)
    # History is Redis' streams: a browser replaying now gets each post once (the
    # history in relay-state is not restored on top of the broker's reload).
    late = await Watcher.open(ports["client"])
    await late.replay(began)
    await late.sync()
    assert late.ids == watchers[0].ids
    await close_all([*watchers, late])
