"""One order for the whole cluster: posts made one after another reach every browser in that order.

An application posts, waits for the answer, posts again, each time on a new
connection (as Phorge's PHP processes do), and each time maybe to another
worker or node. A post answered before the next one was sent must reach every
browser before it, on every node and worker, and a replay anywhere must give
that same order: the order Redis gave the posts.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections import Counter
from collections.abc import Sequence

import aiohttp
import pytest

from tests.harness import RelayNode, Relays
from tests.redis_harness import RedisServer
from tests.support import Browser, eventually, notification

pytestmark = pytest.mark.slow

POSTS = 30
ROUNDS = 3
KEY = "PHID-ORDER"


async def post_one_after_another(nodes: Sequence[RelayNode], prefix: str) -> list[str]:
    """``POSTS`` posts, each after the previous one's answer, on a new connection, node by node.

    On a node of several workers each new connection may reach another worker.
    """
    posted = []
    for n in range(POSTS):
        unique_id = f"{prefix}-{n:02d}"
        # A connector that closes after each request: every post is a new connection.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            admin = nodes[n % len(nodes)].admin(session)
            status, _ = await admin.post(notification(KEY, unique_id=unique_id))
        assert status == 200
        posted.append(unique_id)
    return posted


async def received_in_order(browsers: list[Browser], expected: list[str]) -> None:
    """Wait until every browser has ``expected`` and check it came in exactly that order."""
    seen: list[list[str]] = [[] for _ in browsers]

    async def everyone_has_all() -> bool:
        for index, browser in enumerate(browsers):
            seen[index] += [m["uniqueID"] for m in await browser.drain()]
        return all(len(ids) >= len(expected) for ids in seen)

    await eventually(everyone_has_all, "every browser received every post")
    for index, ids in enumerate(seen):
        assert ids == expected, f"browser {index} got them in another order"


def serving_pids(client_port: int) -> Counter[int]:
    """How many established browser connections each process serves on ``client_port``."""
    listing = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{client_port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Counter(int(pid) for pid in re.findall(r"pid=(\d+)", listing))


async def test_posts_one_after_another_reach_both_workers_browsers_in_posting_order(
    relays: Relays, redis_server: RedisServer
) -> None:
    [node] = await relays.broker(1, redis_server.url, workers=2).start()
    browsers = [await node.browser(KEY) for _ in range(16)]
    # The kernel spreads connections over the workers (SO_REUSEPORT): both serve some.
    assert len(serving_pids(node.client_port)) == 2
    posted: list[str] = []
    for round_ in range(ROUNDS):
        new = await post_one_after_another([node], f"w{round_}")
        posted += new
        await received_in_order(browsers, new)
    replaying = await node.browser(KEY)
    await replaying.send("replay", {"age": 60000})
    assert [m["uniqueID"] for m in await replaying.drain()] == posted
    for browser in [*browsers, replaying]:
        await browser.close()


async def test_posts_to_three_nodes_in_turn_reach_every_browser_and_replay_in_one_order(
    relays: Relays, redis_server: RedisServer
) -> None:
    cluster = await relays.broker(3, redis_server.url).start()
    browsers = [await node.browser(KEY) for node in cluster for _ in range(8)]
    posted: list[str] = []
    for round_ in range(ROUNDS):
        new = await post_one_after_another(cluster.nodes, f"n{round_}")
        posted += new
        await received_in_order(browsers, new)
    # Replay on each node: the same order everywhere, the one the browsers saw.
    for node in cluster:
        replaying = await node.browser(KEY)
        await replaying.send("replay", {"age": 60000})
        assert [m["uniqueID"] for m in await replaying.drain()] == posted
        await replaying.close()
    await asyncio.gather(*(browser.close() for browser in browsers))
