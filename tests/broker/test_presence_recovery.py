"""Presence across a Redis recovery, with real relay processes on a real redis-server.

Redis restarted empty holds no record until each node announces again, so
the first readings after it miss nodes that never left. No node may be seen
leaving then (in ``/status/``'s ``nodes.left``, or logged as leaving); a node
killed while Redis was away must still be seen leaving, within the gone
bound after Redis is back.
"""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import pytest

from relay.links.presence import GONE_AFTER
from tests.harness import Cluster, Relays
from tests.redis_harness import RedisServer
from tests.support import WAIT, Admin, eventually

pytestmark = pytest.mark.slow

INTERVAL = 0.5
BROKER = {
    "presence_interval_seconds": INTERVAL,
    "timeout_seconds": 0.5,
    "connect_timeout_seconds": 0.5,
    "backoff_initial_seconds": 0.05,
    "backoff_max_seconds": 0.5,
}
#: What a loaded test machine may add to a bound: a poll, a slow event loop.
SLACK = 1.0
#: How long after Redis is back every node has been read again, or seen leaving.
RECOVERY = GONE_AFTER * INTERVAL + 2 * INTERVAL


async def nodes_entry(admin: Admin) -> dict[str, object]:
    entry = (await admin.status())["nodes"]
    assert isinstance(entry, dict)
    return entry


async def everyone_listed(cluster: Cluster, admins: list[Admin]) -> dict[int, str]:
    """Wait until each node lists every node fresh; their places, by index."""

    async def listed() -> bool:
        for admin in admins:
            members = (await nodes_entry(admin))["members"]
            assert isinstance(members, list)
            if len(members) != len(cluster) or {m["state"] for m in members} != {"fresh"}:
                return False
        return True

    await eventually(listed, "every node lists every node, fresh")
    places = {}
    for index, admin in enumerate(admins):
        members = (await nodes_entry(admin))["members"]
        assert isinstance(members, list)
        (place,) = [m["place"] for m in members if m["self"]]
        places[index] = place
    return places


async def watch_left(
    admins: list[Admin], seconds: float, until: list[str] | None = None
) -> list[dict[str, float]]:
    """Each place each node listed as left while watched, and when first (s into the watch).

    The watch lasts ``seconds``, or until every node lists ``until`` as left.
    """
    seen: list[dict[str, float]] = [{} for _ in admins]
    start = time.monotonic()
    while (now := time.monotonic()) < start + seconds:
        lefts = [(await nodes_entry(admin))["left"] for admin in admins]
        for left, places in zip(lefts, seen, strict=True):
            assert isinstance(left, list)
            for place in left:
                places.setdefault(place, now - start)
        if until is not None and all(left == until for left in lefts):
            break
        await asyncio.sleep(0.02)  # a poll: the window is the scenario, nothing waits on it
    return seen


def leaving_logged(log: str) -> list[str]:
    return re.findall(r"presence: node (\S+) left broker prefix", log)


async def test_redis_restarted_empty_shows_no_node_leaving(
    relays: Relays, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    cluster = await relays.broker(3, {"url": redis_server.url, **BROKER}).start()
    admins = cluster.admins(session)
    await everyone_listed(cluster, admins)
    logged = [len(node.log) for node in cluster]

    redis_server.kill()
    redis_server.start()  # the same port, and no record of any node

    seen = await watch_left(admins, RECOVERY)
    assert seen == [{}, {}, {}]
    await everyone_listed(cluster, admins)
    for node, start in zip(cluster, logged, strict=True):
        assert leaving_logged(node.log[start:]) == [], node.log[start:]


async def test_a_node_killed_while_redis_is_away_is_seen_leaving_once_it_is_back(
    relays: Relays, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    cluster = await relays.broker(3, {"url": redis_server.url, **BROKER}).start()
    admins = cluster.admins(session)
    places = await everyone_listed(cluster, admins)
    killed = f"{cluster[2].pid}"
    logged = [len(node.log) for node in cluster][:2]

    redis_server.kill()
    cluster[2].kill()
    alive = admins[:2]

    async def aged_out() -> bool:
        # Away longer than the gone bound: the last reading has aged out, this
        # node's own record with the others.
        for admin in alive:
            entry = await nodes_entry(admin)
            if entry["last_error"] is None or entry["members"] != []:
                return False
        return True

    await eventually(aged_out, "the last readings of nodes 0 and 1 age out")
    redis_server.start()

    # Redis is back with no record: node 2 never announces again.
    seen = await watch_left(alive, RECOVERY + SLACK, until=[places[2]])
    for left in seen:
        assert left.keys() == {places[2]}, seen
        assert left[places[2]] <= GONE_AFTER * INTERVAL + INTERVAL + SLACK, seen
    for admin in alive:
        assert (await nodes_entry(admin))["left"] == [places[2]]
    for node, start in zip([cluster[0], cluster[1]], logged, strict=True):
        # Logged at the first round that no longer reads it.
        await asyncio.to_thread(node.wait_for_log, rf"presence: node \S+:{killed} left", 1, WAIT)
        lines = leaving_logged(node.log[start:])
        assert [name.rpartition(":")[2] for name in lines] == [killed], node.log[start:]
