"""A successor that adopted a batch the old process then resumed gives it back untouched.

In process: the old node's wait for the successor's acknowledgement is made
short and the successor reads nothing until the old one has given up, as
when a loaded box stalls it. The old process resumes the batch and says
``ABORT``; the successor, reading on, adopts the batch, then must drop only
its own descriptors (no close frame) and fail, while the old process goes
on serving the same browsers on the same connections.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.config import parse_config
from relay.errors import StartupError
from relay.listeners.handoff import MovableConnection
from relay.node import handoff
from relay.node.handoff_take import adopt_all, take_over
from tests.broker.test_broker import StartNode, collect, open_browser
from tests.support import Admin, local_config, notification

BROWSERS = 3


async def test_a_batch_the_old_process_resumed_is_given_back(
    start_node: StartNode,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handoff, "ANSWER_SECONDS", 0.2)
    config = local_config(limits={"max_connections_per_ip": 0})
    old = await start_node(config, connection_factory=MovableConnection)
    browsers = [await open_browser(old, "PHID-G") for _ in range(BROWSERS)]
    path = str(tmp_path / "handoff.sock")
    point = handoff.HandoffPoint(old, path, on_done=lambda: None)
    point.start()
    try:
        successor, channel, resumption = await take_over(parse_config(config), path)
        try:
            # Nothing read here until the old process gave up: its wait times out.
            handing = point._task  # the old side's handoff, under way since LISTENERS
            assert handing is not None
            await asyncio.wait_for(handing, 10)
            with pytest.raises(StartupError, match="serves again: 1 batches"):
                await adopt_all(successor, channel, resumption)
        finally:
            channel.close()
            await successor.stop()
    finally:
        point.close()
    admin = Admin(session, old.admin_addresses[0][1])
    status, _ = await admin.post(notification("PHID-G", unique_id="after"))
    assert status == 200
    for browser in browsers:
        got: list[dict[str, Any]] = []
        await collect(browser, got, 1, "the old process still serves the browser")
        assert [message["uniqueID"] for message in got] == ["after"]
        await browser.close()
