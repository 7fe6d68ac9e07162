"""The end of a handoff is certain: an old process that hangs after its ``DONE`` is killed.

In process, both sides in the test's event loop; each watches the other's
pid through a stand-in (the other side is this very process). The old
process never reads the successor's ``DONE``: the successor used to assume
success after ``ANSWER_SECONDS``, while the old one could still wake, give
up and serve beside it. It now kills it, says so, and serves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import pytest

from relay.config import parse_config
from relay.links.handoff_wire import Kind
from relay.listeners.handoff import Channel, MovableConnection
from relay.node import handoff, handoff_abort, handoff_take
from relay.node.handoff_take import adopt_all, take_over
from tests.broker.test_broker import StartNode, open_browser
from tests.node.handoff_parts import stand_ins
from tests.support import WAIT, local_config


def _config() -> dict[str, Any]:
    return local_config(limits={"max_connections_per_ip": 0})


async def test_a_successor_kills_an_old_process_that_hangs_after_its_done(
    start_node: StartNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(handoff_take, "ANSWER_SECONDS", 0.2)
    watched = stand_ins(monkeypatch, handoff_abort, handoff_take)
    answer = handoff._answer
    hung = asyncio.Event()

    async def hang_at_the_end(channel: Channel, expected: Kind) -> dict[str, object]:
        if expected is Kind.DONE:  # alive, but it never reads the successor's DONE
            hung.set()
            await asyncio.Event().wait()
        return await answer(channel, expected)

    monkeypatch.setattr(handoff, "_answer", hang_at_the_end)
    old = await start_node(_config(), connection_factory=MovableConnection)
    browser = await open_browser(old, "PHID-E")
    path = str(tmp_path / "handoff.sock")
    point = handoff.HandoffPoint(old, path, on_done=lambda: None)
    point.start()
    try:
        successor, channel, resumption = await take_over(parse_config(_config()), path)
        try:
            async with asyncio.timeout(WAIT):
                await adopt_all(successor, channel, resumption)  # serves on
            assert hung.is_set()
            [old_process] = watched
            assert old_process.pid == os.getpid()  # the old side: this process here
            assert old_process.killed
            assert "has not confirmed the end of the handoff" in caplog.text
            assert successor.hub.subscription_count() == 1
        finally:
            channel.close()
            handing = point._task
            if handing is not None:
                handing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await handing
            await successor.stop()
    finally:
        point.close()
    await browser.ws.close()
