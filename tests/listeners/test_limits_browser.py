"""Browser-side limits against a real node: each limit enforced, everyone else unaffected."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from relay.node.node import Node
from tests.support import (
    WAIT,
    Admin,
    Browser,
    RelayProcess,
    eventually,
    local_config,
    notification,
)
from tests.tools.readers import handshake

StartNode = Callable[..., Awaitable[Node]]


async def start(start_node: StartNode, **limits: Any) -> tuple[Node, int]:
    node = await start_node(local_config(limits=limits))
    return node, node.client_addresses[0][1]


async def close_code(browser: Browser) -> int | None:
    """Read until the server closes the connection; return its close code."""
    async with asyncio.timeout(WAIT):
        try:
            while True:
                await browser.ws.recv()
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


async def test_subscriptions_past_the_cap_are_refused_and_the_connection_stays(
    start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    node, port = await start(start_node)  # default cap: 1,000 keys
    admin = Admin(session, node.admin_addresses[0][1])
    browser = await Browser.open(port)
    keys = [f"PHID-{n:05d}" for n in range(10_001)]
    for first in range(0, len(keys), 1000):  # each frame stays under 64 KiB
        await browser.send("subscribe", keys[first : first + 1000])
    await browser.sync()
    assert node.hub.subscription_count(next(iter(node.client_listeners[0]._connections))) == 1000
    await admin.post(notification("PHID-00999", n=1))
    await admin.post(notification("PHID-01000", n=2))
    assert [m["n"] for m in await browser.drain()] == [1]
    await browser.unsubscribe("PHID-00000")
    await browser.subscribe("PHID-LATE")
    await admin.post(notification("PHID-LATE", n=3))
    assert [m["n"] for m in await browser.drain()] == [3]
    await browser.close()


async def test_overlong_keys_are_refused_and_the_connection_stays(
    start_node: StartNode, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    node, port = await start(start_node)  # default key length: 255
    admin = Admin(session, node.admin_addresses[0][1])
    browser = await Browser.open(port)
    long_key = "K" * 10_000
    with caplog.at_level(logging.INFO, logger="relay.browser"):
        await browser.subscribe(long_key, "PHID-OK")
    assert "refused 1 keys" in caplog.text
    assert node.hub._index.recipients("default", [long_key]) == []
    await admin.post(notification(long_key, n=1))
    await admin.post(notification("PHID-OK", n=2))
    assert [m["n"] for m in await browser.drain()] == [2]
    await browser.close()


async def test_an_oversized_frame_closes_with_1009(start_node: StartNode) -> None:
    _, port = await start(start_node)
    browser = await Browser.open(port, max_size=None)
    await browser.ws.send("x" * (10 * 1024 * 1024))
    assert await close_code(browser) == 1009


async def test_connections_over_the_node_cap_get_503(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    _, port = await start(start_node, max_connections=3)
    browsers = [await Browser.open(port) for _ in range(3)]
    with pytest.raises(websockets.InvalidStatus) as refused:
        await Browser.open(port)
    assert refused.value.response.status_code == 503
    # The first refusal is reported at once, counted as one.
    assert any(
        m.startswith("refused 1 browser connection since the last report (connection limit)")
        for m in caplog.messages
    ), caplog.messages
    for browser in browsers:  # the others are untouched
        await browser.sync()
    await browsers[0].close()

    async def slot_freed() -> bool:
        try:
            browsers[0] = await Browser.open(port)
        except websockets.InvalidStatus:
            return False
        return True

    await eventually(slot_freed, "a closed connection frees its slot")
    for browser in browsers:
        await browser.close()


async def test_connections_over_the_per_address_cap_get_503(start_node: StartNode) -> None:
    _, port = await start(start_node, max_connections_per_ip=2)
    browsers = [await Browser.open(port) for _ in range(2)]
    with pytest.raises(websockets.InvalidStatus) as refused:
        await Browser.open(port)
    assert refused.value.response.status_code == 503
    assert b"this address" in refused.value.response.body
    for browser in browsers:
        await browser.close()


@pytest.mark.slow
async def test_slowloris_handshakes_are_cut_and_a_real_browser_still_gets_in(
    tmp_path: Path,
) -> None:
    deadline = 3.0
    config = tmp_path / "relay.json"
    config.write_bytes(orjson.dumps(local_config(limits={"handshake_seconds": deadline})))
    # Server, attackers and the real browser each in their own process or loop,
    # so that none slows another down and the timings are the server's.
    relay = await asyncio.to_thread(RelayProcess(config).start)
    attack = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).parent.parent / "tools" / "slowloris.py"),
        str(relay.client_ports[0]),
        "1000",
        "2.0",
        str(deadline + WAIT),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert attack.stdout is not None
        async with asyncio.timeout(WAIT):
            assert await attack.stdout.readline() == b"ready\n"
        started = time.monotonic()
        browser = await Browser.open(relay.client_ports[0])
        await browser.sync()
        connect_time = time.monotonic() - started
        await browser.close()
        async with asyncio.timeout(deadline + 2 * WAIT):
            lived = orjson.loads(await attack.stdout.readline())
            await attack.wait()
    finally:
        if attack.returncode is None:
            attack.kill()
            await attack.wait()
        relay.kill()
    assert connect_time < 1.0
    assert len(lived) == 1000
    assert max(lived) < deadline + 1.0, max(lived)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://phorge.example.com", True),
        ("https://evil.example.net", False),
        ("https://phorge.example.com.evil.net", False),
    ],
)
async def test_origin_allow_list(start_node: StartNode, origin: str, allowed: bool) -> None:
    config = local_config(browsers={"origins": ["https://phorge.example.com"]})
    node = await start_node(config)
    port = node.client_addresses[0][1]
    if allowed:
        browser = await Browser.open(port, origin=origin)
        await browser.sync()
        await browser.close()
    else:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await Browser.open(port, origin=origin)
        assert refused.value.response.status_code == 403
        assert node.hub.status("default")["clients.total"] == 0


@pytest.mark.parametrize("allow_missing", [True, False])
async def test_the_missing_origin_policy_is_explicit(
    start_node: StartNode, allow_missing: bool
) -> None:
    config = local_config(
        browsers={"origins": ["https://phorge.example.com"], "allow_missing_origin": allow_missing}
    )
    node = await start_node(config)
    port = node.client_addresses[0][1]
    if allow_missing:
        browser = await Browser.open(port)  # websockets sends no Origin by default
        await browser.close()
    else:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await Browser.open(port)
        assert refused.value.response.status_code == 403


async def test_compression_is_off_by_default_and_bounded_when_on(start_node: StartNode) -> None:
    _, plain_port = await start(start_node)
    plain = await Browser.open(plain_port, compression="deflate")
    assert plain.ws.response is not None
    assert "Sec-WebSocket-Extensions" not in plain.ws.response.headers
    await plain.close()

    node = await start_node(local_config(browsers={"compression": True}))
    browser = await Browser.open(node.client_addresses[0][1], compression="deflate", max_size=None)
    assert browser.ws.response is not None
    assert "permessage-deflate" in browser.ws.response.headers["Sec-WebSocket-Extensions"]
    await browser.subscribe("PHID-Z")  # compressed commands work
    await browser.ws.send("0" * (20 * 1024 * 1024))  # ~20 KB on the wire, 20 MiB inflated
    assert await close_code(browser) == 1009


async def read_until_closed(sock: socket.socket) -> None:
    """Read (bounded in time) until the connection ends."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(WAIT):
        while await loop.sock_recv(sock, 4096):
            pass


async def test_silent_browsers_are_pinged_then_dropped_and_answering_ones_stay(
    start_node: StartNode,
) -> None:
    node, port = await start(start_node, ping_interval_seconds=0.2, ping_timeout_seconds=0.2)
    answering = await Browser.open(port, ping_interval=None)  # websockets answers pings itself
    silent = await asyncio.to_thread(handshake, port, "PHID-SILENT")  # reads, never answers
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(WAIT):
        first = await loop.sock_recv(silent, 2)
    assert first[0] == 0x89  # FIN + ping: the server noticed the silence and asked

    async def silent_one_dropped() -> bool:
        await answering.sync()
        return bool(node.hub.status("default")["clients.active"] == 1)

    await eventually(silent_one_dropped, "the silent browser is dropped")
    # Dropped with a reset (a dead browser's unread data is freed at once):
    # only the rest of the ping, then the reset.
    with pytest.raises(ConnectionResetError):
        await read_until_closed(silent)
    silent.close()
    # The answering browser was pinged as often and is still here.
    await answering.sync()
    await answering.close()


async def test_one_connections_failure_does_not_touch_another(
    start_node: StartNode, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    node, port = await start(start_node)
    admin = Admin(session, node.admin_addresses[0][1])
    real_subscribe = node.hub.subscribe

    def subscribe(browser: Any, keys: Any) -> int:
        if "PHID-BOOM" in keys:
            raise RuntimeError("injected fault")
        return real_subscribe(browser, keys)

    monkeypatch.setattr(node.hub, "subscribe", subscribe)
    healthy, doomed = await Browser.open(port), await Browser.open(port)
    await healthy.subscribe("PHID-OK")
    await doomed.send("subscribe", ["PHID-BOOM"])
    assert await close_code(doomed) == 1011
    await admin.post(notification("PHID-OK", n=1))
    assert [m["n"] for m in await healthy.drain()] == [1]
    await healthy.close()
