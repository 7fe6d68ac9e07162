"""Hostile clients in numbers, against a real node: what one may do, many may not multiply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import select
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest

from relay.core.admission import MAX_WAITING_REFUSALS
from relay.core.instances import MAX_INSTANCE_NAME
from relay.links.peer_batch import BATCH_PATH
from relay.node.node import Node
from tests.support import WAIT, Admin, Browser, RelayProcess, eventually, local_config, notification

OpenBrowser = Callable[..., Awaitable[Browser]]


async def test_many_browsers_sending_bad_frames_write_one_line_between_them(
    admin: Admin, open_browser: OpenBrowser, caplog: pytest.LogCaptureFixture
) -> None:
    # One line per connection would let a client write to the log as fast as
    # it can connect: each connection's first bad frame counts toward the
    # node's own bounded rate instead.
    reader = await open_browser()
    await reader.subscribe("A")
    with caplog.at_level(logging.INFO, logger="relay.browser"):
        for _ in range(20):
            browser = await open_browser()
            await browser.ws.send("garbage")
            await browser.ws.send(b"binary")
            await browser.send("subscribe", ["K" * 1000])
            await browser.sync()
    lines = [r for r in caplog.records if r.name == "relay.browser" and r.levelno >= logging.INFO]
    assert [r.getMessage() for r in lines] == [
        "browser 127.0.0.1 sent an unusable frame, ignored: not valid JSON: unexpected "
        "character, expected a JSON value (more from this browser are logged at DEBUG only)"
    ]
    await admin.post(notification("A", n=1))
    assert [m["n"] for m in await reader.drain()] == [1]


async def test_the_bounded_line_says_how_many_browsers_it_stood_for(
    node: Node, open_browser: OpenBrowser, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        browser = await open_browser()
        await browser.ws.send("garbage")
        await browser.sync()
    [listener] = node.client_listeners
    listener._refusal_lines.interval = 0.0  # the next line is due at once
    with caplog.at_level(logging.INFO, logger="relay.browser"):
        browser = await open_browser()
        await browser.ws.send("garbage")
        await browser.sync()
    [line] = [
        r.getMessage()
        for r in caplog.records
        if r.name == "relay.browser" and r.levelno >= logging.INFO
    ]
    assert line.endswith(
        "(more from this browser are logged at DEBUG only; 2 more browsers since the last "
        "such line)"
    )


def open_silent(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that never send a byte (the kernel completes them from the backlog)."""
    return [socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(count)]


def closed_by_node(sock: socket.socket) -> bool:
    """Whether the node has closed ``sock`` (EOF or reset); never blocks."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.mark.slow
async def test_connections_over_the_cap_cannot_take_every_descriptor_from_the_admin_port(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    # A connection over a cap waits for its request, to be answered 503; each
    # holds a descriptor meanwhile. Were they not bounded, a client connecting
    # and sending nothing would take the node's last descriptors from the
    # admin port (posts reset) and the browsers, with max_connections well
    # under the open-files limit as the README asks.
    config = tmp_path / "relay.json"
    limits = {"max_connections": 10, "handshake_seconds": 4 * WAIT}
    config.write_bytes(orjson.dumps(local_config(limits=limits)))
    relay = await asyncio.to_thread(RelayProcess(config).start)
    relay.follow_log()
    silent: list[socket.socket] = []
    try:
        resource.prlimit(relay.pid, resource.RLIMIT_NOFILE, (300, 300))
        port = relay.client_ports[0]
        browser = await Browser.open(port)
        await browser.subscribe("A")
        silent = await asyncio.to_thread(open_silent, port, 400)

        async def only_the_bound_waits() -> bool:
            return sum(not closed_by_node(sock) for sock in silent) <= 9 + MAX_WAITING_REFUSALS

        await eventually(only_the_bound_waits, "the node closed the refusals past the bound")
        admin = Admin(session, relay.admin_ports[0])
        async with asyncio.timeout(WAIT):
            assert (await admin.post(notification("A", n=1)))[0] == 200
        assert [m["n"] for m in await browser.drain()] == [1]
        # One that waits still gets its answer, saying why (the first 9 were admitted).
        waiting = [sock for sock in silent if not closed_by_node(sock)][-1]
        status, _, body = await asyncio.to_thread(exchange_on, waiting, port)
        assert status == 503
        assert b"connection limit" in body
        await browser.close()
    finally:
        for sock in silent:
            sock.close()
        relay.signal(signal.SIGTERM)
        _, output = await asyncio.to_thread(relay.wait)
    assert "Traceback" not in output
    assert "too many refused connections wait" in output


def exchange_on(sock: socket.socket, port: int) -> tuple[int, bytes, bytes]:
    """Send a WebSocket handshake on ``sock``; return the status, head and body of the answer."""
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    answer = b""
    with contextlib.suppress(ConnectionResetError):
        while piece := sock.recv(4096):
            answer += piece
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


async def test_a_post_or_batch_naming_an_overlong_instance_gets_a_json_400(
    admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    # Every instance named is remembered with its messages (history, the
    # deduplication of the last two minutes' 200,000 posts): a name of 8 KiB
    # in each post held 300 MiB after 32,000 posts, in six seconds.
    longest = "i" * MAX_INSTANCE_NAME
    assert (await admin.post(notification("A"), instance=longest))[0] == 200
    status, answer = await admin.post(notification("A"), instance=longest + "i")
    assert (status, answer) == (
        400,
        {"error": f"the instance name is longer than {MAX_INSTANCE_NAME} characters"},
    )
    record = {"instance": longest + "i", "covered": [], "message": notification("A")}
    async with admin.session.post(admin.base + BATCH_PATH, data=orjson.dumps([record])) as r:
        assert r.status == 400
        assert await r.json() == {
            "error": "batch record 0: the instance name is longer than "
            f"{MAX_INSTANCE_NAME} characters"
        }
    assert [r for r in caplog.records if r.levelno > logging.WARNING or r.exc_info] == []
