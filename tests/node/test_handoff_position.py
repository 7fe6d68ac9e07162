"""The successor's side of a broker-mode handoff, in process, on a real redis-server.

Where ``test_handoff_broker`` runs the whole handoff (whose cut falls where
the timing puts it), this pins the cut down: a successor held back at a
stream position delivers exactly what follows it, including what Redis took
while it was held, and keeps only what precedes it, for replay.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from relay.config import parse_config
from relay.node.handoff_cut import Resumption
from relay.node.node import Node
from tests.broker.test_broker import FAST, StartNode, broker_config, collect, open_browser
from tests.redis_harness import RedisServer
from tests.support import Admin, eventually, notification


async def _post(session: aiohttp.ClientSession, node: Node, *ids: str) -> None:
    admin = Admin(session, node.admin_addresses[0][1])
    for unique in ids:
        status, _ = await admin.post(notification("PHID-P", unique_id=unique))
        assert status == 200


def _ids(messages: list[dict[str, Any]]) -> list[str]:
    return [message["uniqueID"] for message in messages]


async def test_a_successor_reads_the_streams_from_the_position_it_was_given(
    redis_server: RedisServer, start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    # A held post is answered anyway after connect_timeout + 2 * timeout: long
    # here, so that only ``resume`` answers it, however late this runner is.
    config = broker_config(redis_server, **(FAST | {"connect_timeout_seconds": 60.0}))
    old = await start_node(config)
    watching_old = await open_browser(old, "PHID-P")
    seen_old: list[dict[str, Any]] = []
    await _post(session, old, *(f"p-{n}" for n in range(5)))
    await collect(watching_old, seen_old, 5, "the old node delivered the first posts")
    assert old.broker is not None
    # Where the old process stood when it passed its listeners.
    position = old.broker.inbound.position()
    await _post(session, old, *(f"p-{n}" for n in range(5, 10)))
    await collect(watching_old, seen_old, 10, "the old node delivered the next posts")

    successor = Node(parse_config(config))
    resumption = Resumption(successor, position)
    await successor.start()
    try:
        browser = await open_browser(successor, "PHID-P")
        # Redis takes this one while the successor reads nothing.
        await _post(session, old, "p-10")
        # A post to the successor is held in its hub for the broker's order, and
        # answered only once Redis has placed it: a post made after the answer,
        # to any node, comes after it.
        posting = asyncio.create_task(_post(session, successor, "p-11"))

        async def held() -> bool:
            return successor.hub.held == 1

        await eventually(held, "the successor took the post")
        assert not posting.done()
        resumption.resume()  # the broker reads from the position it was given
        await posting
        await _post(session, old, "p-12")
        seen: list[dict[str, Any]] = []
        await collect(browser, seen, 8, "the successor delivered what follows the position")
        seen += await browser.drain()
        assert _ids(seen) == [f"p-{n}" for n in range(5, 13)]
        await collect(watching_old, seen_old, 13, "the old node delivered every post")
        assert _ids(seen_old) == [f"p-{n}" for n in range(13)]
        # What precedes the position is history: replayed when asked, never pushed.
        await browser.send("replay", {"age": 60000})
        assert _ids(await browser.drain()) == [f"p-{n}" for n in range(13)]
        await browser.close()
    finally:
        await successor.stop()
    await watching_old.close()
