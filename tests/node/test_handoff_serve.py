"""``serve_handing_over``: a start that fails once it has browsers stops the node it started."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relay.config import parse_config
from relay.errors import StartupError
from relay.node.handoff_serve import serve_handing_over
from relay.node.node import Node
from tests.support import WAIT, Browser, local_config


async def test_a_start_that_fails_after_browsers_came_closes_them_with_1001(
    tmp_path: Path,
) -> None:
    started: list[Node] = []
    browsers: list[Browser] = []

    async def start(node: Node) -> None:
        # As relay.node.restart's start does: client listeners and browsers
        # first, then the admin listeners, which fail here.
        await node.start(admin_later=True)
        started.append(node)
        browser = await Browser.open(node.client_addresses[0][1])
        await browser.subscribe("K")
        browsers.append(browser)
        raise StartupError("cannot read the admin certificate")

    never = asyncio.Event()
    config = parse_config(local_config())
    with pytest.raises(StartupError, match="admin certificate"):
        await serve_handing_over(
            config,
            str(tmp_path / "handoff.sock"),
            take_over_first=False,
            shutdown_trigger=never.wait,
            start=start,
        )
    assert started[0].client_listeners == []  # stopped, not left running
    async with asyncio.timeout(WAIT):
        await browsers[0].ws.wait_closed()
    assert browsers[0].ws.close_code == 1001
    assert not (tmp_path / "handoff.sock").exists()  # no handoff point was started
