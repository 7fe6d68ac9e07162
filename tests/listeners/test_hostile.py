"""What a fuzzer found (issue 19), against a real node on real sockets: answers, not tracebacks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest

from relay.node.node import Node
from tests.support import Admin, Browser, notification

StartNode = Callable[..., Awaitable[Node]]


def no_trouble(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Records above WARNING or carrying a traceback, as lines."""
    return [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno > logging.WARNING or r.exc_info
    ]


async def test_a_command_nested_past_what_json_can_write_is_ignored_like_any_unknown_one(
    admin: Admin, open_browser: Callable[..., Awaitable[Browser]], caplog: pytest.LogCaptureFixture
) -> None:
    browser = await open_browser()
    await browser.subscribe("A")
    with caplog.at_level(logging.DEBUG, logger="relay.browser"):
        await browser.ws.send('{"command":' + "[" * 300 + "]" * 300 + ',"data":[]}')
        await browser.sync()  # answered: the connection is still up
    assert [r.getMessage() for r in caplog.records if "nested too deep" in r.getMessage()] == [
        "browser 127.0.0.1 sent an unusable frame, ignored: unknown command (an array nested "
        "too deep to show) (more from this browser are logged at DEBUG only)"
    ]
    assert no_trouble(caplog) == []
    await admin.post(notification("A", n=1))
    assert [m["n"] for m in await browser.drain()] == [1]
