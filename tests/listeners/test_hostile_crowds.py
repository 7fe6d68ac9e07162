"""Hostile clients in numbers, against a real node: what one may do, many may not multiply."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest

from relay.node.node import Node
from tests.support import Admin, Browser, notification

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
