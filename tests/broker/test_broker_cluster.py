"""Broker mode with real relay processes on a real redis-server: the acceptance scenarios."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time

import aiohttp
import orjson
import pytest
import websockets

from tests.harness import Cluster, Relays
from tests.redis_harness import RedisServer
from tests.support import eventually, notification

pytestmark = pytest.mark.slow

#: Fault detection and reconnection quick enough to test, still far above a healthy round trip.
BROKER_TIMING = {
    "timeout_seconds": 0.5,
    "connect_timeout_seconds": 0.5,
    "ping_interval_seconds": 0.25,
    "stale_seconds": 1.5,
    "backoff_initial_seconds": 0.05,
    "backoff_max_seconds": 1.0,
}


async def start_cluster(relays: Relays, redis: RedisServer, size: int) -> Cluster:
    return await relays.broker(size, {"url": redis.url, **BROKER_TIMING}).start()


async def test_five_nodes_deliver_each_message_once_on_every_node(
    relays: Relays, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    cluster = await start_cluster(relays, redis_server, 5)
    admins = cluster.admins(session)
    browsers = await cluster.browsers("PHID-FIVE")
    strangers = await cluster.browsers("PHID-FIVE", path="/~other/")
    posts = 25
    for n in range(posts):
        status, _ = await admins[n % 5].post(notification("PHID-FIVE", unique_id=f"five-{n:02d}"))
        assert status == 200
    seen: list[list[str]] = [[] for _ in browsers]

    async def everyone_has_everything() -> bool:
        for index, browser in enumerate(browsers):
            seen[index] += [m["uniqueID"] for m in await browser.drain()]
        return all(len(ids) >= posts for ids in seen)

    await eventually(everyone_has_everything, "every browser received every message")
    for index, browser in enumerate(browsers):
        seen[index] += [m["uniqueID"] for m in await browser.drain()]
        assert sorted(seen[index]) == [f"five-{n:02d}" for n in range(posts)], index
    for stranger in strangers:
        assert await stranger.drain() == []
    for admin in admins:
        broker = (await admin.status())["broker"]
        assert broker["state"] == "up"
        # One publish per post, one receive per message per node, whatever the node count.
        assert broker["published"] == posts // 5
        assert broker["received"] == posts
    for browser in [*browsers, *strangers]:
        await browser.close()


async def test_a_browser_moving_to_a_restarted_node_replays_the_whole_cluster(
    relays: Relays, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    cluster = await start_cluster(relays, redis_server, 3)
    admins = cluster.admins(session)
    leaving = await cluster[0].browser("PHID-MOVE")
    watcher = await cluster[2].browser("PHID-MOVE")
    watched: list[str] = []
    posted: list[str] = []

    async def post(n: int) -> None:
        unique_id = f"move-{n:02d}"
        await admins[n % 3].post(notification("PHID-MOVE", unique_id=unique_id))
        posted.append(unique_id)

        async def went_round() -> bool:
            watched.extend(m["uniqueID"] for m in await watcher.drain())
            return unique_id in watched

        # Each post follows the delivery of the one before: the cluster's order is this one.
        await eventually(went_round, f"{unique_id} reached node 2")

    for n in range(6):
        await post(n)
    await leaving.close()
    for n in range(6, 12):
        await post(n)
    # Node 1 restarts: whatever it kept itself is gone; Redis has the cluster's window.
    cluster[1].kill()
    await cluster.start(1)
    back = await cluster[1].browser("PHID-MOVE")
    await back.send("replay", {"age": 60000})
    replayed = [m["uniqueID"] for m in await back.drain()]
    assert replayed == posted
    for browser in (watcher, back):
        await browser.close()


async def test_redis_killed_and_restarted_during_traffic(
    relays: Relays, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    size = 3
    cluster = await start_cluster(relays, redis_server, size)
    admins = cluster.admins(session)
    browsers = await cluster.browsers("PHID-KILL")
    arrivals: list[dict[str, float]] = [{} for _ in range(size)]

    duplicates: list[tuple[int, str]] = []

    async def read_checked(index: int) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                unique_id = orjson.loads(await browsers[index].ws.recv())["uniqueID"]
                if unique_id in arrivals[index]:
                    duplicates.append((index, unique_id))
                arrivals[index][unique_id] = time.monotonic()

    readers = [asyncio.create_task(read_checked(i)) for i in range(size)]
    try:
        posted: dict[str, tuple[int, float]] = {}
        answer_times: list[float] = []
        states: list[str] = []
        killed_at = restarted_at = 0.0
        # 150 posts at about 50 a second: Redis dies after 30, comes back 1.5 s later.
        # The timings are the nodes': this (large) test process's own garbage
        # collector would add pauses of its own, so it waits until the loop ends.
        gc.disable()
        try:
            for n in range(150):
                if n == 30:
                    redis_server.kill()
                    killed_at = time.monotonic()
                    redis_server.standby()  # the restart's fork, out of the way of the timings
                if killed_at and not restarted_at and time.monotonic() - killed_at > 1.5:
                    states.append((await admins[0].status())["broker"]["state"])
                    await asyncio.to_thread(redis_server.resume)
                    restarted_at = time.monotonic()
                origin = n % size
                unique_id = f"kill-{n:03d}"
                started = time.monotonic()
                status, _ = await admins[origin].post(
                    notification("PHID-KILL", unique_id=unique_id)
                )
                answer_times.append(time.monotonic() - started)
                assert status == 200
                posted[unique_id] = (origin, started)
                await asyncio.sleep(0.02)  # pacing the traffic, not synchronising
        finally:
            gc.enable()
        assert restarted_at, "the loop ended before Redis was restarted"
        assert states == ["down"]
        slow = [(n, round(t, 3)) for n, t in enumerate(answer_times) if t >= 0.1]
        # (post number, seconds to answer, seconds after Redis came back) of any slow answer
        posted_at = [at for _, at in posted.values()]
        assert not slow, [(n, t, round(posted_at[n] - restarted_at, 3)) for n, t in slow]

        async def everyone_has_everything() -> bool:
            return all(len(arrivals[i]) == len(posted) for i in range(size))

        await eventually(everyone_has_everything, "every message reached every node")
        assert duplicates == []
        # Local delivery never waited for Redis: a post reached its own node's browser at once.
        local = [arrivals[origin][uid] - at for uid, (origin, at) in posted.items()]
        assert max(local) < 0.1, sorted(local)[-5:]
        # Cluster delivery resumed within 5 s of Redis returning: what was posted
        # during the outage, and after it, reached the other nodes within that.
        resumed = [
            arrivals[other][uid] - restarted_at
            for uid, (origin, at) in posted.items()
            if at > killed_at
            for other in range(size)
            if other != origin
        ]
        assert resumed
        assert max(resumed) < 5.0, max(resumed)
        for admin in admins:
            broker = (await admin.status())["broker"]
            assert broker["state"] == "up"
            assert broker["reconnects"] == 1
            assert broker["queue"] == 0
            assert broker["last_error"]
    finally:
        # Also when an assertion failed: nothing is left open for a later test to find.
        for reader in readers:
            reader.cancel()
        for browser in browsers:
            await browser.close()
    for node in cluster:
        assert node.running, "a node died"
        log = node.log
        assert log.count("is down") == 1, log
        assert log.count("is up again") == 1, log
