"""The mesh's cost and reach: N-1 transfers per post, detours, batches, Aphlict peers.

N-1 peer transfers per post, detours around a broken link, batches between
relay nodes, and Aphlict's format for an Aphlict peer in the same mesh.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.harness import Relays, peer_entry
from tests.support import Admin, Browser, eventually, notification

pytestmark = pytest.mark.slow

APHLICT_FINGERPRINT = "aphlictDouble234"
RELAY_HEADER = {"X-Relay-Peer": "batch/1"}


@dataclass
class AphlictDouble:
    """A peer speaking Aphlict's admin protocol: ``POST /``, a fingerprint receipt, nothing more.

    It answers any other path 404 as Aphlict does, and sends no relay header.
    """

    posts: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    port: int = 0
    #: Cleared, it holds every answer back: a peer that is up but cannot keep up.
    open: asyncio.Event = field(default_factory=asyncio.Event)
    #: Claim, wrongly, to take relay's batches (its /peer/batch is still 404).
    advertise: bool = False

    async def start(self) -> web.AppRunner:
        self.open.set()

        async def receive(request: web.Request) -> web.Response:
            body = orjson.loads(await request.read())
            await self.open.wait()
            self.posts.append((request.path, request.query.get("instance", ""), body))
            headers = {"X-Relay-Peer": "batch/1"} if self.advertise else None
            return web.json_response({"fingerprint": APHLICT_FINGERPRINT}, headers=headers)

        app = web.Application()
        app.router.add_post("/", receive)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        return runner


StartDouble = Callable[..., Awaitable[AphlictDouble]]


@pytest.fixture
async def aphlict_double() -> AsyncIterator[StartDouble]:
    """Start Aphlict doubles (with ``AphlictDouble``'s options); all are stopped at the end."""
    started: list[tuple[AphlictDouble, web.AppRunner]] = []

    async def start(**options: Any) -> AphlictDouble:
        double = AphlictDouble(**options)
        started.append((double, await double.start()))
        return double

    yield start
    for double, runner in started:
        double.open.set()  # a held answer would keep the runner's cleanup waiting
        await runner.cleanup()


async def statuses(admins: list[Admin]) -> list[dict[str, Any]]:
    return [await admin.status() for admin in admins]


def relay_links(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The links of a node to other relay nodes (not itself, not the Aphlict double)."""
    return [
        peer
        for peer in status["cluster"]
        if not peer["self"] and peer["fingerprint"] != APHLICT_FINGERPRINT
    ]


async def warm_up(admins: list[Admin], peers_each: int) -> None:
    """Post once to every node until each knows itself and its peers (fingerprints, batching)."""
    for index, admin in enumerate(admins):
        assert (await admin.post(notification("PHID-WARM", unique_id=f"warm-{index}")))[0] == 200

    async def settled() -> bool:
        for status in await statuses(admins):
            links = status["cluster"]
            if sum(peer["self"] for peer in links) != 1:
                return False
            others = [peer for peer in links if not peer["self"]]
            if len(others) != peers_each or any(peer["state"] != "up" for peer in others):
                return False
            if any(not peer["batching"] for peer in relay_links(status)):
                return False
        return True

    await eventually(settled, "every node knows itself and its peers, and batches to relays")


async def quiet(admins: list[Admin]) -> list[dict[str, Any]]:
    """Wait until no node has a message queued or in flight to a peer; return the statuses."""
    latest: list[dict[str, Any]] = []

    async def idle() -> bool:
        nonlocal latest
        latest = await statuses(admins)
        return all(
            peer["queue"] == 0 and peer["in_flight"] == 0
            for status in latest
            for peer in status["cluster"]
        )

    await eventually(idle, "every peer queue is empty")
    return latest


def totals(all_status: list[dict[str, Any]]) -> tuple[int, int]:
    """Messages sent to relay peers over the whole mesh, and messages received (POSTed) by all."""
    sent = sum(peer["sent"] for status in all_status for peer in relay_links(status))
    received = sum(status["messages.in"] for status in all_status)
    return sent, received


async def receive_all(browsers: list[Browser], ids: list[str]) -> None:
    """Wait until every browser has every message of ``ids``; fail on a duplicate."""
    seen: list[list[str]] = [[] for _ in browsers]

    async def everyone_has_all() -> bool:
        for index, browser in enumerate(browsers):
            seen[index] += [m["uniqueID"] for m in await browser.drain()]
        return all(len(got) >= len(ids) for got in seen)

    await eventually(everyone_has_all, "every browser received every message")
    for index, browser in enumerate(browsers):
        seen[index] += [m["uniqueID"] for m in await browser.drain()]
        assert sorted(seen[index]) == sorted(ids), f"node {index}: lost or duplicated"


@pytest.mark.parametrize("size", [3, 5])
async def test_a_post_costs_n_minus_1_transfers_in_a_relay_mesh(
    relays: Relays, session: aiohttp.ClientSession, size: int
) -> None:
    cluster = await relays.mesh(size).start()
    admins = cluster.admins(session)
    browsers = await cluster.browsers("PHID-COST")
    await warm_up(admins, size - 1)
    sent_before, received_before = totals(await quiet(admins))

    posts = 30
    ids = [f"cost-{n:03d}" for n in range(posts)]
    for n, unique_id in enumerate(ids):
        # Posts enter at every node, so every node forwards as origin and as receiver.
        code, _ = await admins[n % size].post(notification("PHID-COST", unique_id=unique_id))
        assert code == 200
    await receive_all(browsers, ids)
    sent_after, received_after = totals(await quiet(admins))
    assert sent_after - sent_before == posts * (size - 1)
    # Every node got each message once: the post itself, or one peer transfer.
    assert received_after - received_before == posts * size
    # Several messages per request: the transfers took fewer POSTs than messages.
    for status in await statuses(admins):
        for peer in relay_links(status):
            assert peer["requests"] <= peer["sent"]
    for browser in browsers:
        await browser.close()


async def test_a_node_behind_a_broken_link_gets_every_message_once(
    relays: Relays, session: aiohttp.ClientSession
) -> None:
    cluster = relays.mesh(3)
    cluster[0].config["cluster"][2]["port"] = relays.unused_port()  # node 0 cannot reach node 2
    await cluster.start()
    admins = cluster.admins(session)
    browsers = await cluster.browsers("PHID-FAR")
    ids = [f"far-{n:03d}" for n in range(40)]
    for unique_id in ids:
        assert (await admins[0].post(notification("PHID-FAR", unique_id=unique_id)))[0] == 200
    # Node 2 is reached only through node 1, and gets each message exactly once.
    await receive_all(browsers, ids)
    link = (await admins[0].status())["cluster"][2]
    assert link["state"] == "down"
    assert link["sent"] == 0
    for browser in browsers:
        await browser.close()


async def test_an_aphlict_peer_gets_one_aphlict_post_per_message(
    relays: Relays, session: aiohttp.ClientSession, aphlict_double: StartDouble
) -> None:
    aphlict = await aphlict_double()
    cluster = await relays.mesh(3, peers=[peer_entry(aphlict.port)]).start()
    admins = cluster.admins(session)
    browsers = await cluster.browsers("PHID-MIX")
    await warm_up(admins, 3)
    for status in await statuses(admins):
        double = [p for p in status["cluster"] if p["fingerprint"] == APHLICT_FINGERPRINT]
        assert [p["batching"] for p in double] == [False]
    aphlict.posts.clear()

    ids = [f"mix-{n:03d}" for n in range(12)]
    for n, unique_id in enumerate(ids):
        await admins[n % 3].post(notification("PHID-MIX", unique_id=unique_id), "acme")
    for browser in browsers:
        await browser.close()
    await quiet(admins)
    # One Aphlict-format POST per message: to "/", with the message's instance,
    # the posted body as is plus a touched list naming the relay node that forwarded it.
    fingerprints = {status["fingerprint"] for status in await statuses(admins)}
    assert sorted(body["uniqueID"] for _, _, body in aphlict.posts) == sorted(ids)
    for path, instance, body in aphlict.posts:
        assert (path, instance) == ("/", "acme")
        assert body["subscribers"] == ["PHID-MIX"]
        assert len(body["touched"]) == 1
        assert body["touched"][0] in fingerprints

    # What the Aphlict node forwards in turn (touched: it) reaches every relay browser
    # once, and no relay node sends it back.
    browsers = await cluster.browsers("PHID-MIX", path="/~acme/")
    aphlict.posts.clear()
    echoed = notification("PHID-MIX", unique_id="from-aphlict", touched=[APHLICT_FINGERPRINT])
    for admin in admins:  # Aphlict posts to every peer not in touched: all three
        assert (await admin.post(echoed, "acme"))[0] == 200
    await receive_all(browsers, ["from-aphlict"])
    await quiet(admins)
    assert aphlict.posts == []
    for browser in browsers:
        await browser.close()


async def test_a_congested_peer_makes_the_node_answer_503_counted_and_logged_once(
    relays: Relays, session: aiohttp.ClientSession, aphlict_double: StartDouble
) -> None:
    slow = await aphlict_double()
    cluster = relays.mesh(1, peering={"queue_size": 5, "max_in_flight": 1})
    cluster[0].config["cluster"] = [peer_entry(slow.port)]
    [node] = await cluster.start()
    admin = node.admin(session)
    assert (await admin.post(notification("PHID-O", unique_id="o-first")))[0] == 200

    async def peer_up() -> bool:
        return bool((await admin.status())["cluster"][0]["state"] == "up")

    await eventually(peer_up, "the peer is up")
    slow.open.clear()
    answers = []
    for n in range(20):
        code, body = await admin.post(notification("PHID-O", unique_id=f"o-{n:02d}"))
        answers.append(code)
        if code == 503:
            assert "another admin server" in body["error"]
    # One message in flight and five queued are taken; then the node says no.
    assert answers == [200] * 6 + [503] * 14
    status = await admin.status()
    assert status["overload"] == {
        "policy": "refuse",
        "active": True,
        "refused": 14,
        "episodes": 1,
    }
    assert status["cluster"][0]["dropped"] == 0
    async with session.get(admin.base + "/metrics") as response:
        metrics = await response.text()
    assert "relay_overload_refused_total 14.0" in metrics
    assert "relay_overload_active 1.0" in metrics

    slow.open.set()

    async def drained() -> bool:
        return bool((await admin.status())["cluster"][0]["queue"] == 0)

    await eventually(drained, "the peer caught up")
    assert (await admin.post(notification("PHID-O", unique_id="o-after")))[0] == 200
    assert (await admin.status())["overload"]["active"] is False
    await quiet([admin])
    # Nothing the node accepted was lost on the way to the peer.
    accepted = ["o-first", *(f"o-{n:02d}" for n in range(6)), "o-after"]
    assert [body["uniqueID"] for _, _, body in slow.posts] == accepted
    node.signal(signal.SIGTERM)
    await asyncio.to_thread(node.wait)
    log = node.log
    assert log.count("peer queues full (cluster[0])") == 1, log
    assert log.count("peer queues drained: taking posts again (14 refused") == 1, log


async def test_a_peer_that_claims_batches_but_refuses_them_gets_single_posts(
    relays: Relays, session: aiohttp.ClientSession, aphlict_double: StartDouble
) -> None:
    liar = await aphlict_double(advertise=True)
    cluster = relays.mesh(1)
    cluster[0].config["cluster"] = [peer_entry(liar.port)]
    [node] = await cluster.start()
    admin = node.admin(session)
    ids = [f"liar-{n:02d}" for n in range(20)]
    for unique_id in ids:
        assert (await admin.post(notification("PHID-L", unique_id=unique_id)))[0] == 200
    await quiet([admin])
    # Every message arrived, once, as Aphlict's single POST; none was lost on the way.
    assert sorted(body["uniqueID"] for _, _, body in liar.posts) == ids
    assert {path for path, _, _ in liar.posts} == {"/"}
    link = (await admin.status())["cluster"][0]
    assert (link["batching"], link["dropped"], link["sent"]) == (False, 0, 20)
    node.signal(signal.SIGTERM)
    await asyncio.to_thread(node.wait)
    log = node.log
    assert log.count("does not take batches (HTTP 404)") == 1, log


async def test_a_link_too_slow_for_a_full_batch_sends_smaller_ones_and_loses_nothing(
    relays: Relays, session: aiohttp.ClientSession
) -> None:
    # A relay-like peer that cannot take more than 8 KiB within the request deadline.
    got: list[str] = []
    sizes: list[int] = []
    # Held until every post is in, so that a batch's worth queues behind the first.
    posted = asyncio.Event()

    async def single(request: web.Request) -> web.Response:
        got.append(orjson.loads(await request.read())["uniqueID"])
        return web.json_response({"fingerprint": "slowRelayPeer234"}, headers=RELAY_HEADER)

    async def batch(request: web.Request) -> web.Response:
        body = await request.read()
        await posted.wait()
        sizes.append(len(body))
        if len(body) > 8192:
            await asyncio.sleep(2.0)  # four times the deadline: the sender gives up on it
        got.extend(record["message"]["uniqueID"] for record in orjson.loads(body))
        return web.json_response({"fingerprint": "slowRelayPeer234"}, headers=RELAY_HEADER)

    app = web.Application()
    app.router.add_post("/", single)
    app.router.add_post("/peer/batch", batch)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        peering = {"timeout_seconds": 0.5, "backoff_initial_seconds": 0.05}
        cluster = relays.mesh(1, peering=peering)
        cluster[0].config["cluster"] = [peer_entry(runner.addresses[0][1])]
        [node] = await cluster.start()
        admin = node.admin(session)
        ids = [f"big-{n:02d}" for n in range(40)]
        for unique_id in ids:
            body = notification("PHID-S", unique_id=unique_id, pad="x" * 1000)
            assert (await admin.post(body))[0] == 200
        posted.set()

        async def all_taken() -> bool:
            return set(got) >= set(ids)

        await eventually(all_taken, "the peer took every message")
        link = (await admin.status())["cluster"][0]
        assert link["failed"] >= 1, "no batch was too big: the test proved nothing"
        assert link["dropped"] == 0
        # After the timeouts, batches small enough for the link went through.
        assert any(size <= 8192 for size in sizes[1:])
    finally:
        await runner.cleanup()
