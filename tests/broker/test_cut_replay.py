"""A node cut off from Redis and back: its replay gives the cluster's order, as every other node's.

Redis and two relay nodes run on hosts of their own (network namespaces), and
node A's link is cut silently while posts go on to both nodes. While cut, A
delivers what is posted to it at once (README, "Redis faults cost nothing
local"), so its browsers see those posts in an order of their own. Once A is
back, the reload gives it what it missed and its own posts take their place
in Redis: from then on a replay, on any node, gives that one order (README,
"Cluster-wide history").

Needs root (namespaces, veth pairs); where they cannot be made, the test fails
saying why.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path

import pytest

from tests.broker.netns_hosts import BrokerHosts
from tests.peering.namespaces import Namespaces
from tests.support import Browser, eventually, notification

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

KEY = "PHID-CUT"
#: The hosts of the two nodes (Redis is on host 0).
A, B = 1, 2
#: A post waits up to timeout_seconds for its place in Redis: long enough that
#: node A, cut off, still holds one while the test posts to node B.
BROKER = {
    "timeout_seconds": 2.0,
    "connect_timeout_seconds": 0.5,
    "ping_interval_seconds": 0.25,
    "stale_seconds": 1.5,
    "backoff_initial_seconds": 0.05,
    "backoff_max_seconds": 0.5,
}


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    made = Namespaces(3)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
async def hosts(tmp_path: Path, namespaces: Namespaces) -> AsyncIterator[BrokerHosts]:
    made = BrokerHosts(tmp_path, namespaces, BROKER)
    try:
        yield made
    finally:
        print(made.close())  # shown with a failed test's report


class Watcher:
    """A browser and every uniqueID it received, in order."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.ids: list[str] = []

    async def has(self, count: int) -> bool:
        self.ids += [m["uniqueID"] for m in await self.browser.drain()]
        return len(self.ids) >= count


async def replayed(hosts: BrokerHosts, index: int) -> list[str]:
    """What a browser new on node ``index`` gets from ``replay``, in order."""
    browser = await hosts.browser(index, KEY)
    await browser.send("replay", {"age": 60000})
    messages = await browser.drain()
    await browser.close()
    return [m["uniqueID"] for m in messages]


async def test_after_a_cut_a_replay_on_either_node_gives_the_one_order(
    hosts: BrokerHosts, namespaces: Namespaces
) -> None:
    await asyncio.to_thread(hosts.start_redis)
    await asyncio.gather(*(asyncio.to_thread(hosts.start_node, index) for index in (A, B)))
    watchers = {index: Watcher(await hosts.browser(index, KEY)) for index in (A, B)}
    posted: list[str] = []

    async def post(index: int, unique_id: str) -> None:
        status, body = await hosts.post(index, notification(KEY, unique_id=unique_id))
        assert status == 200, body
        posted.append(unique_id)

    async def everyone_has_all() -> None:
        count = len(posted)
        await eventually(
            lambda: all_of(w.has(count) for w in watchers.values()),
            f"both browsers have the {count} posts",
        )

    async def broker_state(index: int) -> str:
        return str((await hosts.status(index))["broker"]["state"])

    for n in range(4):
        await post((A, B)[n % 2], f"before-{n}")
    await everyone_has_all()

    namespaces.cut(A)
    # Node A does not know yet: it holds this post for its place in Redis, in vain.
    held = asyncio.create_task(post(A, "held-on-A"))
    await eventually(lambda: is_(broker_state(A), "down"), "node A sees Redis gone")
    await held
    # While A is away: B's posts reach Redis, A's are delivered on A at once.
    await post(B, "on-B-while-A-away-0")
    await post(A, "on-A-while-away")
    await post(B, "on-B-while-A-away-1")
    namespaces.heal(A)

    async def a_back() -> bool:
        reading = (await hosts.status(A))["broker"]
        return bool(reading["state"] == "up" and reading["queue"] == 0)

    await eventually(a_back, "node A is back with nothing queued")
    for n in range(4):
        await post((A, B)[n % 2], f"after-{n}")
    await everyone_has_all()

    on_a, on_b = await replayed(hosts, A), await replayed(hosts, B)
    assert sorted(on_a) == sorted(posted), on_a
    # Node B never lost Redis: its browsers saw the cluster's order.
    assert on_b == watchers[B].ids
    assert on_a == on_b, f"node A replays {on_a}, node B {on_b}; A's browser saw {watchers[A].ids}"
    # A's browsers saw A's posts of the cut first (delivered at once, README),
    # and the rest in the cluster's order.
    away = {"held-on-A", "on-A-while-away"}
    assert [i for i in watchers[A].ids if i not in away] == [i for i in on_b if i not in away]
    for watcher in watchers.values():
        await watcher.browser.close()


async def all_of(checks: Iterator[Awaitable[bool]]) -> bool:
    """Whether every check holds (each is awaited, so each browser drains)."""
    results = [await check for check in checks]
    return all(results)


async def is_(value: Awaitable[str], expected: str) -> bool:
    return await value == expected
