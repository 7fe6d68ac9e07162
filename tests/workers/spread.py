"""Browsers opened on a ``--workers`` node until both workers hold some.

The kernel picks a worker for each connection, so the tests that need both
workers open their browsers here and wait until ``/status/`` shows them
spread, through whichever status reader the test uses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from tests.support import Browser, eventually

StatusReader = Callable[[aiohttp.ClientSession, int], Awaitable[dict[str, Any]]]


async def spread_browsers(
    session: aiohttp.ClientSession,
    ports: tuple[int, int],
    *,
    key: str,
    count: int,
    status: StatusReader,
) -> list[Browser]:
    """``count`` browsers on ``key``, once every worker holds some of them.

    ``ports`` is the node's client and admin port.
    """
    client_port, admin_port = ports
    browsers = [await Browser.open(client_port) for _ in range(count)]
    for browser in browsers:
        await browser.subscribe(key)

    async def spread() -> bool:
        workers = (await status(session, admin_port))["workers"]
        counts = [worker.get("connections", 0) for worker in workers]
        return sum(counts) == count and all(counts)

    await eventually(spread, "the browsers are spread over both workers")
    return browsers
