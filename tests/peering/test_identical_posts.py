"""Identical posts without a ``uniqueID`` are separate messages: each one reaches every browser.

Phorge names each notification (``uniqueID``), but other applications and
scripts post the same body several times on purpose ("the workboard
changed"), and Aphlict delivers every post. The node an application posts to
names such a post, so that its copies still travel the cluster as one message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from relay.core.fingerprint import new_fingerprint
from relay.node.node import Node
from tests.harness import Relays
from tests.redis_harness import RedisServer
from tests.support import Admin, Browser, eventually, free_ports, local_config

StartNode = Callable[..., Awaitable[Node]]

#: The shape of Phorge's workboard updates, as a script would post it: no uniqueID.
WORKBOARD = {"type": "workboards", "subscribers": ["PHID-PROJ-board"]}


async def receive(browsers: list[Browser], count: int) -> list[list[dict[str, Any]]]:
    """What each browser received, once each has ``count`` messages, plus any late extra."""
    received: list[list[dict[str, Any]]] = [[] for _ in browsers]

    async def all_arrived() -> bool:
        for seen, browser in zip(received, browsers, strict=True):
            seen.extend(await browser.drain())
        return all(len(seen) >= count for seen in received)

    await eventually(all_arrived, f"every browser received {count} messages")
    for seen, browser in zip(received, browsers, strict=True):
        seen.extend(await browser.drain())
    return received


async def test_three_identical_posts_reach_a_browser_three_times_on_a_lone_node(
    node: Node, admin: Admin, open_browser: Callable[..., Awaitable[Browser]]
) -> None:
    browser = await open_browser()
    await browser.subscribe("PHID-PROJ-board")
    for _ in range(3):
        assert (await admin.post(WORKBOARD))[0] == 200
    [received] = await receive([browser], 3)
    assert len(received) == 3
    # Each is what was posted, named by the node, which stamped it.
    stamp = [node.hub.fingerprint]
    for message in received:
        assert message == {**WORKBOARD, "uniqueID": message["uniqueID"], "touched": stamp}
    assert len({message["uniqueID"] for message in received}) == 3
    assert (await admin.status())["history.size"] == 3


@pytest.mark.slow
async def test_identical_posts_reach_every_node_of_a_mesh_once_per_post(
    relays: Relays, session: aiohttp.ClientSession
) -> None:
    cluster = await relays.mesh(3).start()
    browsers = await cluster.browsers("PHID-PROJ-board")
    admins = cluster.admins(session)
    # Three to one node, then one to each: six posts of one identical body.
    for admin in [admins[0]] * 3 + admins:
        assert (await admin.post(WORKBOARD))[0] == 200
    received = await receive(browsers, 6)
    for seen in received:
        ids = [message["uniqueID"] for message in seen]
        assert len(ids) == len(set(ids)) == 6, "lost or duplicated"
    assert len({tuple(sorted(m["uniqueID"] for m in seen)) for seen in received}) == 1
    for admin in admins:
        assert (await admin.status())["history.size"] == 6
    for browser in browsers:
        await browser.close()


async def test_identical_posts_reach_every_broker_mode_node_once_per_post(
    redis_server: RedisServer, start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    nodes = [await start_node(local_config(broker={"url": redis_server.url})) for _ in range(3)]
    browsers = [await Browser.open(node.client_addresses[0][1]) for node in nodes]
    for browser in browsers:
        await browser.subscribe("PHID-PROJ-board")
    admin = Admin(session, nodes[0].admin_addresses[0][1])
    for _ in range(3):
        assert (await admin.post(WORKBOARD))[0] == 200
    received = await receive(browsers, 3)

    async def all_through_redis() -> bool:
        statuses = [await Admin(session, n.admin_addresses[0][1]).status() for n in nodes]
        return all(status["broker"]["received"] == 3 for status in statuses)

    await eventually(all_through_redis, "every node received the three messages from Redis")
    for seen, browser in zip(received, browsers, strict=True):
        seen.extend(await browser.drain())
        assert len({message["uniqueID"] for message in seen}) == len(seen) == 3
    for browser in browsers:
        await browser.close()


class AphlictStandIn:
    """A peer that forwards the way Aphlict does (see spec/aphlict-compat.md, section 5).

    Aphlict itself (Node.js, Phorge's code) is not part of this project; this
    does what the spec says it does with a post: stop if its fingerprint is
    in ``touched``, else append it, keep the message as delivered, and POST
    the JSON it received to every peer whose fingerprint it does not know or
    that is not in ``touched``. It never de-duplicates.
    """

    def __init__(self, peers: list[int]) -> None:
        self.fingerprint = new_fingerprint()
        self.peers = {port: "" for port in peers}  # port -> learned fingerprint
        self.delivered: list[dict[str, Any]] = []
        self.forwarding: set[asyncio.Task[None]] = set()

    async def handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        touched = body.setdefault("touched", [])
        if self.fingerprint not in touched:
            touched.append(self.fingerprint)
            self.delivered.append(body)
            for port, fingerprint in self.peers.items():
                if not fingerprint or fingerprint not in touched:
                    task = asyncio.create_task(self.forward(port, orjson.dumps(body)))
                    self.forwarding.add(task)
                    task.add_done_callback(self.forwarding.discard)
        return web.json_response({"fingerprint": self.fingerprint})

    async def forward(self, port: int, payload: bytes) -> None:
        url = f"http://127.0.0.1:{port}/"
        async with aiohttp.ClientSession() as session, session.post(url, data=payload) as response:
            self.peers[port] = (await response.json())["fingerprint"]


@pytest.fixture
async def serve_app() -> AsyncIterator[Callable[[web.Application, int], Awaitable[None]]]:
    runners: list[web.AppRunner] = []

    async def serve(app: web.Application, port: int) -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", port).start()

    yield serve
    for runner in runners:
        await runner.cleanup()


async def test_named_posts_still_deduplicate_through_an_aphlict_peer(
    start_node: StartNode,
    session: aiohttp.ClientSession,
    serve_app: Callable[[web.Application, int], Awaitable[None]],
) -> None:
    relay_ports = free_ports(2)
    aphlict_port = free_ports(1)[0]
    everyone = [*relay_ports, aphlict_port]
    aphlict = AphlictStandIn(relay_ports)
    app = web.Application()
    app.router.add_post("/", aphlict.handle)
    await serve_app(app, aphlict_port)
    nodes = []
    for port in relay_ports:
        config = {
            "servers": [
                {"type": "client", "port": 0, "listen": "127.0.0.1"},
                {"type": "admin", "port": port, "listen": "127.0.0.1"},
            ],
            "cluster": [{"host": "127.0.0.1", "port": p, "protocol": "http"} for p in everyone],
        }
        nodes.append(await start_node(config))
    browsers = [await Browser.open(node.client_addresses[0][1]) for node in nodes]
    for browser in browsers:
        await browser.subscribe("PHID-PROJ-board")
    admin = Admin(session, relay_ports[0])
    for _ in range(3):
        assert (await admin.post(WORKBOARD))[0] == 200

    received = await receive(browsers, 3)
    first = nodes[0].hub.fingerprint

    def straight_from_first() -> list[dict[str, Any]]:
        return [m for m in aphlict.delivered if m["touched"] == [first, aphlict.fingerprint]]

    # The second relay node gets each message from the first, and again
    # through the Aphlict peer, which passed the uniqueID on.
    async def aphlict_forwarded_everything() -> bool:
        return len(straight_from_first()) == 3 and not aphlict.forwarding

    await eventually(aphlict_forwarded_everything, "the Aphlict peer forwarded every message")
    assert nodes[1].hub.status("default")["messages.in"] >= 6
    for seen, browser in zip(received, browsers, strict=True):
        seen.extend(await browser.drain())
        assert len(seen) == 3
        assert len({message["uniqueID"] for message in seen}) == 3
    assert {m["uniqueID"] for m in straight_from_first()} == {m["uniqueID"] for m in received[1]}
    for browser in browsers:
        await browser.close()
