"""Clusters of real relay processes: exactly-once delivery, dead and silent peers, TLS peers."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import trustme
import websockets

from tests.harness import Relays, peer_entry
from tests.support import WAIT, Admin, Browser, eventually, notification

pytestmark = pytest.mark.slow


async def peer_states(admin: Admin) -> list[str]:
    return [peer["state"] for peer in (await admin.status())["cluster"]]


@pytest.mark.parametrize("size", [3, 5])
async def test_full_mesh_delivers_every_message_exactly_once_everywhere(
    relays: Relays, session: aiohttp.ClientSession, size: int
) -> None:
    cluster = await relays.mesh(size).start()
    admins = cluster.admins(session)
    browsers = await cluster.browsers("PHID-MESH")
    posts = 4 * size
    for n in range(posts):
        status, receipt = await admins[n % size].post(
            notification("PHID-MESH", unique_id=f"mesh-{n:04d}", n=n)
        )
        assert status == 200
        assert receipt["fingerprint"]

    seen: list[list[dict[str, Any]]] = [[] for _ in browsers]

    async def everyone_has_everything() -> bool:
        for browser, got in zip(browsers, seen, strict=True):
            got += await browser.drain()
        return all(len(got) >= posts for got in seen)

    await eventually(everyone_has_everything, "every browser received every message")
    for browser, got in zip(browsers, seen, strict=True):
        got += await browser.drain()
        ids = [message["uniqueID"] for message in got]
        assert sorted(ids) == [f"mesh-{n:04d}" for n in range(posts)], "lost or duplicated"
    for admin in admins:
        node_status = await admin.status()
        assert node_status["history.size"] == posts
        assert [peer["self"] for peer in node_status["cluster"]].count(True) <= 1
    # A late browser replaying history gets each message once, on every node.
    for port in cluster.client_ports:
        late = await Browser.open(port)
        await late.subscribe("PHID-MESH")
        await late.send("replay", {"age": 60000})
        assert len(await late.drain()) == posts
        await late.close()
    for browser in browsers:
        await browser.close()


async def test_every_node_recognises_itself_in_its_own_list(
    relays: Relays, session: aiohttp.ClientSession
) -> None:
    cluster = await relays.mesh(3).start()
    admins = cluster.admins(session)
    for n, admin in enumerate(admins):
        await admin.post(notification("PHID-X", unique_id=f"self-{n}"))

    async def settled() -> bool:
        states = [sorted(await peer_states(admin)) for admin in admins]
        return all(state == ["self", "up", "up"] for state in states)

    await eventually(settled, "each node found itself and its two peers")
    for index, admin in enumerate(admins):
        status = await admin.status()
        me = [peer for peer in status["cluster"] if peer["self"]]
        assert me[0]["port"] == cluster.admin_ports[index]
        assert me[0]["fingerprint"] == status["fingerprint"]
        # Each node POSTed a message to itself once at most: the receipt that told it
        # who it is, unless the answer to its presence (mesh mode) told it first.
        assert me[0]["sent"] <= 1


async def test_a_node_reached_only_through_another_still_gets_everything(
    relays: Relays, session: aiohttp.ClientSession
) -> None:
    cluster = relays.mesh(3)
    cluster[0].config["cluster"][2]["port"] = relays.unused_port()  # node 0 cannot reach node 2
    await cluster.start()
    far = await cluster[2].browser("PHID-FAR")
    admin = cluster[0].admin(session)
    for n in range(5):
        await admin.post(notification("PHID-FAR", unique_id=f"far-{n}"))
    received: list[dict[str, Any]] = []

    async def all_arrived() -> bool:
        received.extend(await far.drain())
        return len(received) >= 5

    await eventually(all_arrived, "node 2 received every message through node 1")
    assert sorted(m["uniqueID"] for m in received) == [f"far-{n}" for n in range(5)]
    assert all(len(m["touched"]) == 3 for m in received)
    states = await peer_states(admin)
    assert states[2] == "down"
    await far.close()


async def test_kill_9_one_node_of_three_while_messages_flow(
    relays: Relays, session: aiohttp.ClientSession
) -> None:
    cluster = await relays.mesh(3).start()
    admins = cluster.admins(session)
    survivors = [0, 1]
    browsers = {i: await Browser.open(cluster.client_ports[i]) for i in range(3)}
    for browser in browsers.values():
        await browser.subscribe("PHID-FLOW")

    arrivals: dict[int, dict[str, float]] = {i: {} for i in range(3)}

    async def read(i: int) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):  # node 2's ends at the kill
            while True:
                message = orjson.loads(await browsers[i].ws.recv())
                arrivals[i].setdefault(message["uniqueID"], time.monotonic())

    readers = [asyncio.create_task(read(i)) for i in range(3)]
    posted: dict[str, tuple[int, float]] = {}
    for n in range(60):
        if n == 20:
            cluster[2].kill()
        origin = survivors[n % 2]
        unique_id = f"flow-{n:03d}"
        posted[unique_id] = (origin, time.monotonic())
        assert (await admins[origin].post(notification("PHID-FLOW", unique_id=unique_id)))[0] == 200

    async def survivors_have_all() -> bool:
        return all(len(arrivals[i]) == len(posted) for i in survivors)

    await eventually(survivors_have_all, "survivors received every message posted to them")
    # Local delivery latency: from the POST to a browser on the node posted to.
    before: list[float] = []
    after: list[float] = []
    for n, (unique_id, (origin, at)) in enumerate(posted.items()):
        (before if n < 20 else after).append(arrivals[origin][unique_id] - at)
    # Half the peer request timeout: a node that waited on its dead peer would blow it.
    bound = 1.0
    assert max(before) < bound
    assert max(after) < bound, (max(before), max(after))

    async def node2_down() -> bool:
        states = [(await peer_states(admins[i]))[2] for i in survivors]
        return states == ["down", "down"]

    await eventually(node2_down, "survivors report node 2 down")

    # Restart node 2 on the same ports: it comes back up and its browsers get news.
    await cluster.start(2)
    reborn = await cluster[2].browser("PHID-FLOW")
    got: list[str] = []

    async def node2_back() -> bool:
        await admins[0].post(notification("PHID-FLOW", unique_id=f"back-{len(got)}"))
        got.extend(m["uniqueID"] for m in await reborn.drain())
        states = [(await peer_states(admins[i]))[2] for i in survivors]
        return any(i.startswith("back-") for i in got) and states == ["up", "up"]

    await eventually(node2_back, "node 2 is up again and receives new messages")
    # Readers run until now so that no browser has unread messages when it closes.
    for reader in readers:
        reader.cancel()
    for browser in [*browsers.values(), reborn]:
        await browser.close()
    # Going down and coming back is logged once each, not once per message.
    survivor = cluster[0]
    survivor.signal(signal.SIGTERM)
    await asyncio.to_thread(survivor.wait)
    log = survivor.log
    # Up, down, up again; and at most one line for what the link held when it fell,
    # passed on through the other peer (relay.links.detour), if it held anything.
    lines = [line for line in log.splitlines() if "peer cluster[2] (http://127.0.0.1" in line]
    assert len([line for line in lines if "went down holding" not in line]) == 3, log
    assert len([line for line in lines if "went down holding" in line]) <= 1, log
    assert log.count("is down") == 1
    assert log.count("is up again") == 1


async def test_a_peer_that_never_answers_costs_nothing(
    relays: Relays, session: aiohttp.ClientSession
) -> None:
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)  # accepts TCP (the kernel does), never reads or answers
        cluster = relays.mesh(1, peering={"queue_size": 5, "timeout_seconds": 0.5})
        cluster[0].config["cluster"] = [peer_entry(blackhole.getsockname()[1])]
        [node] = await cluster.start()
        admin = node.admin(session)
        browser = await node.browser("PHID-BH")
        for n in range(30):
            started = time.monotonic()
            await admin.post(notification("PHID-BH", unique_id=f"bh-{n}"))
            message = await browser.recv()
            assert message["uniqueID"] == f"bh-{n}"
            # Far below the peer's 0.5 s timeout: delivery never waits on the peer.
            assert time.monotonic() - started < 0.25
        peer = (await admin.status())["cluster"][0]
        assert peer["queue"] <= 5
        assert peer["dropped"] >= 30 - 5 - 4  # all but the queue and the in-flight posts

        async def reported_down() -> bool:
            peer = (await admin.status())["cluster"][0]
            return bool(peer["state"] == "down" and peer["last_error"] == "timed out")

        await eventually(reported_down, "the silent peer is reported down")
        await browser.close()


async def test_unicode_arrives_byte_identical_on_every_node(
    relays: Relays, session: aiohttp.ClientSession
) -> None:
    cluster = await relays.mesh(3).start()
    text = 'Crème brûlée — 東京の天気 — 🎉🚀 — Ελληνικά — \u2028 \\ " end'
    browsers = await cluster.browsers("PHID-UNI")
    body = notification("PHID-UNI", unique_id="unicode-1", text=text)
    await cluster[1].admin(session).post(body)
    for browser in browsers:
        async with asyncio.timeout(WAIT):
            frame = await browser.ws.recv(decode=False)
        assert orjson.dumps(text) in frame
        assert orjson.loads(frame)["text"] == text
        await browser.close()


def tls_peer_files(ca: trustme.CA, directory: Path) -> dict[str, str]:
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    key, cert = directory / "peer-key.pem", directory / "peer-cert.pem"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    return {"ssl.key": str(key), "ssl.cert": str(cert)}


@pytest.mark.parametrize(
    ("trusted", "verify"),
    [(True, True), (False, True), (False, False)],
    ids=["trusted-ca", "untrusted-ca", "untrusted-ca-verification-off"],
)
async def test_https_peers_are_verified(
    relays: Relays,
    tmp_path: Path,
    session: aiohttp.ClientSession,
    trusted: bool,
    verify: bool,
) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    (ca if trusted else trustme.CA()).cert_pem.write_to_path(str(ca_file))
    tls = tls_peer_files(ca, tmp_path)
    cluster = relays.mesh(2, peering={"ca_file": str(ca_file)})
    for node in cluster:
        node.config["cluster"] = [
            {**peer, "protocol": "https", "tls_verify": verify} for peer in node.config["cluster"]
        ]
        node.config["servers"][1].update(tls)
    # Only an explicit tls_verify: false lets an unverifiable peer through.
    trusted = trusted or not verify
    await cluster.start()
    receiver = await cluster[1].browser("PHID-TLS")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with session.post(
        f"https://127.0.0.1:{cluster.admin_ports[0]}/",
        data=orjson.dumps(notification("PHID-TLS", unique_id="tls-1")),
        ssl=context,
    ) as response:
        assert response.status == 200

    async def link_settled() -> bool:
        async with session.get(
            f"https://127.0.0.1:{cluster.admin_ports[0]}/status/", ssl=context
        ) as r:
            peer = (await r.json())["cluster"][1]
        return bool(peer["state"] == ("up" if trusted else "down"))

    await eventually(link_settled, "the https peer link settled")
    if trusted:
        assert [m["uniqueID"] for m in await receiver.drain()] == ["tls-1"]
    else:
        async with session.get(
            f"https://127.0.0.1:{cluster.admin_ports[0]}/status/", ssl=context
        ) as r:
            peer = (await r.json())["cluster"][1]
        assert "certificate" in peer["last_error"]
        assert await receiver.drain() == []
    await receiver.close()
