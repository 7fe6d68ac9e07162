"""``POST /peer/batch`` on a real node: what a relay peer sends, and what it gets back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson

from relay.links.peer_batch import encode_batch, encode_covered, encode_record
from relay.node.node import Node
from tests.support import Admin, Browser, notification

OpenBrowser = Callable[..., Awaitable[Browser]]


async def test_a_batch_is_routed_message_by_message_with_the_capability_header(
    node: Node, admin: Admin, open_browser: OpenBrowser
) -> None:
    acme = await open_browser("/~acme/")
    await acme.subscribe("PHID-B")
    records = [
        encode_record(
            "acme",
            encode_covered({"peerFingerprint1"}),
            orjson.dumps(notification("PHID-B", unique_id=f"b-{n}", touched=["peerFingerprint1"])),
        )
        for n in range(3)
    ]
    async with admin.session.post(admin.base + "/peer/batch", data=encode_batch(records)) as r:
        assert r.status == 200
        assert r.headers["X-Relay-Peer"] == "batch/1"
        assert await r.json() == {"fingerprint": node.hub.fingerprint, "accepted": 3}
    received = await acme.drain()
    assert [m["uniqueID"] for m in received] == ["b-0", "b-1", "b-2"]
    assert received[0]["touched"] == ["peerFingerprint1", node.hub.fingerprint]


async def test_plain_posts_advertise_batches_too(admin: Admin) -> None:
    async with admin.session.post(admin.base + "/", data=orjson.dumps(notification("A"))) as r:
        assert r.status == 200
        assert r.headers["X-Relay-Peer"] == "batch/1"


async def test_a_bad_batch_gets_a_400_naming_the_record_and_nothing_is_routed(
    node: Node, admin: Admin, open_browser: OpenBrowser
) -> None:
    browser = await open_browser("/")
    await browser.subscribe("PHID-B")
    good = encode_record("default", b"[]", orjson.dumps(notification("PHID-B", unique_id="ok")))
    bad = encode_record("default", b"[]", b'{"subscribers": "PHID-B"}')
    async with admin.session.post(admin.base + "/peer/batch", data=encode_batch([good, bad])) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert error == 'batch record 1: "subscribers" must be a list of strings'
    assert await browser.drain() == []
