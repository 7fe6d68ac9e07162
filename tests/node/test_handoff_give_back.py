"""A batch the old process takes back is served by one process at a time, never by two.

In process: the old node's wait for the successor's acknowledgement is made
short, so that it gives up, as on a loaded box. Both sides watch the other's
pid through stand-ins (the other side is this very process).

- The successor stalls and reads nothing until the old process has given
  up: it then adopts the batch, reads the ``ABORT`` behind it and gives the
  batch back (no close frame); the old process serves on the same browsers
  on the same connections.
- The successor adopts the batch and serves it at once, but its ``ADOPTED``
  is still in flight when the old process gives up, and it reads the
  ``ABORT`` only when the test lets it. Until then the old process must not
  serve the batch (it used to resume it at once: both processes read and
  wrote the same sockets until the successor read the ``ABORT``); once the
  successor says ``RELEASED``, it does.
- The same, with browsers that subscribe and unsubscribe while the
  successor serves them: the old process resumes them with those
  subscriptions, not the ones they had at the cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.config import parse_config
from relay.errors import StartupError
from relay.links.handoff_wire import HandoffError, Kind
from relay.listeners.handoff import Channel
from relay.listeners.movable import MovableConnection
from relay.node import handoff_abort, handoff_take
from relay.node.handoff_take import adopt_all, take_over
from relay.node.node import Node
from tests.broker.test_broker import StartNode, collect, open_browser
from tests.node.handoff_parts import handoff_point, stand_ins
from tests.support import WAIT, Admin, Browser, eventually, local_config, notification

BROWSERS = 3


def _config(answer_seconds: float = 30.0) -> dict[str, Any]:
    return local_config(
        limits={"max_connections_per_ip": 0, "handoff_answer_seconds": answer_seconds}
    )


async def _old_node(
    start_node: StartNode, answer_seconds: float = 0.2
) -> tuple[Node, list[Browser]]:
    """The old node: it gives up ``answer_seconds`` after a question its successor leaves open."""
    old = await start_node(_config(answer_seconds), connection_factory=MovableConnection)
    return old, [await open_browser(old, "PHID-G") for _ in range(BROWSERS)]


async def _served_here_once(
    old: Node, session: aiohttp.ClientSession, browsers: Sequence[Browser]
) -> None:
    """A post to ``old`` reaches each browser once, on the connection it had."""
    admin = Admin(session, old.admin_addresses[0][1])
    status, _ = await admin.post(notification("PHID-G", unique_id="after"))
    assert status == 200
    for browser in browsers:
        got: list[dict[str, Any]] = []
        await collect(browser, got, 1, "the old process still serves the browser")
        assert [message["uniqueID"] for message in got] == ["after"]
        await browser.close()


async def test_a_batch_the_old_process_resumed_is_given_back(
    start_node: StartNode,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stand_ins(monkeypatch, handoff_abort, handoff_take)
    caplog.set_level(logging.INFO, "relay.handoff")
    old, browsers = await _old_node(start_node)
    async with handoff_point(old, tmp_path) as (point, path):
        successor, channel, resumption = await take_over(parse_config(_config()), path)
        try:
            # Nothing read here until the old process gave up: its wait timed out.
            async def gave_up() -> bool:
                return "handoff failed, this process keeps serving" in caplog.text

            await eventually(gave_up, "the old process gave up")
            with pytest.raises(StartupError, match="serves again: 1 batches"):
                await adopt_all(successor, channel, resumption)
            handing = point._task  # the old side's handoff: it resumes the batch now
            assert handing is not None
            await asyncio.wait_for(handing, WAIT)
        finally:
            channel.close()
            await successor.stop()
    assert "the successor released the 1 batches" in caplog.text
    await _served_here_once(old, session, browsers)


class AdoptedInFlight:
    """The successor's ``ADOPTED`` stays in flight until the ``ABORT`` behind it has come.

    The successor then reads that ``ABORT`` only once the test sets ``go_on``;
    until then it serves the batch it adopted, while the old process has given up.
    """

    def __init__(self, channel: Channel, monkeypatch: pytest.MonkeyPatch) -> None:
        self.adopted, self.aborted, self.go_on = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._in_flight: list[dict[str, object]] = []
        self._send, self._receive = channel.send, channel.receive
        monkeypatch.setattr(channel, "send", self._send_late)
        monkeypatch.setattr(channel, "receive", self._receive_held)

    def _send_late(
        self, kind: Kind, body: dict[str, object], fds: Sequence[int] = (), *, owned: bool = False
    ) -> None:
        if kind is Kind.ADOPTED and not self.aborted.is_set():
            self._in_flight.append(body)
            self.adopted.set()
        else:
            self._send(kind, body, fds, owned=owned)

    async def _receive_held(self) -> tuple[Kind, dict[str, object], list[int]]:
        item = await self._receive()
        if item[0] is Kind.ABORT:
            with contextlib.suppress(HandoffError):  # it may be gone already
                for body in self._in_flight:
                    self._send(Kind.ADOPTED, body)  # arrives now, after the old process gave up
            self.aborted.set()
            await self.go_on.wait()
        return item


@contextlib.asynccontextmanager
async def served_then_given_back(
    old: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Node, AdoptedInFlight]]:
    """A successor adopts ``old``'s batch and serves it while ``old`` gives up; then gives it back.

    The body runs while the successor serves the batch, its ``ADOPTED`` in
    flight (``AdoptedInFlight``); on leaving, the successor reads the
    ``ABORT``, gives the batch back and fails, and the old process resumes it.
    """
    async with handoff_point(old, tmp_path) as (point, path):
        successor, channel, resumption = await take_over(parse_config(_config()), path)
        held = AdoptedInFlight(channel, monkeypatch)
        adopting = asyncio.create_task(adopt_all(successor, channel, resumption))
        try:
            yield successor, held
            async with asyncio.timeout(WAIT):
                await held.aborted.wait()
            held.go_on.set()
            with pytest.raises(StartupError, match="serves again: 1 batches"):
                await adopting
            handing = point._task  # the old side's handoff: it resumes the batch now
            assert handing is not None
            await asyncio.wait_for(handing, WAIT)
        finally:
            held.go_on.set()
            adopting.cancel()
            channel.close()
            await successor.stop()


async def test_a_batch_adopted_before_the_abort_is_not_served_twice(
    start_node: StartNode,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watched = stand_ins(monkeypatch, handoff_abort, handoff_take)
    old, browsers = await _old_node(start_node)
    async with served_then_given_back(old, tmp_path, monkeypatch) as (successor, held):
        async with asyncio.timeout(WAIT):
            await held.aborted.wait()
        # The successor serves the batch, and has not read the ABORT: the
        # old process, which gave up, must not serve it too.
        assert successor.hub.subscription_count() == BROWSERS
        assert old.hub.subscription_count() == 0
    assert old.hub.subscription_count() == BROWSERS  # resumed once released
    assert not any(process.killed for process in watched)  # it answered: nobody killed
    await _served_here_once(old, session, browsers)


async def test_subscriptions_changed_in_the_successor_go_back_with_the_batch(
    start_node: StartNode,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_ins(monkeypatch, handoff_abort, handoff_take)
    old, browsers = await _old_node(start_node)
    async with served_then_given_back(old, tmp_path, monkeypatch) as (successor, held):
        async with asyncio.timeout(WAIT):
            await held.aborted.wait()
        # While the successor serves it, one browser follows another object
        # and another stops following the shared one.
        await browsers[0].subscribe("PHID-NEW")
        await browsers[1].unsubscribe("PHID-G")
        assert successor.hub.subscription_count() == BROWSERS
    # The old process serves them again as the successor left them.
    admin = Admin(session, old.admin_addresses[0][1])
    for key in ("PHID-NEW", "PHID-G"):
        status, _ = await admin.post(notification(key, unique_id=key))
        assert status == 200
    got: list[dict[str, Any]] = []
    await collect(browsers[0], got, 2, "the browser that followed PHID-NEW gets both")
    assert sorted(message["uniqueID"] for message in got) == ["PHID-G", "PHID-NEW"]
    got = []
    await collect(browsers[2], got, 1, "the others get the shared key's")
    assert [message["uniqueID"] for message in got] == ["PHID-G"]
    assert await browsers[1].drain() == []  # it unsubscribed: nothing


async def test_a_post_the_successor_delivered_is_not_replayed_when_the_batch_goes_back(
    start_node: StartNode,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_ins(monkeypatch, handoff_abort, handoff_take)
    # 2 s for the post below to be made before the old process gives up.
    old, browsers = await _old_node(start_node, answer_seconds=2.0)
    admin = Admin(session, old.admin_addresses[0][1])
    async with served_then_given_back(old, tmp_path, monkeypatch) as (_, held):
        async with asyncio.timeout(WAIT):
            await held.adopted.wait()
        # Posted to the old process, forwarded, and delivered by the successor.
        status, _ = await admin.post(notification("PHID-G", unique_id="during"))
        assert status == 200
    status, _ = await admin.post(notification("PHID-G", unique_id="after"))
    assert status == 200
    for browser in browsers:
        got: list[dict[str, Any]] = []
        await collect(browser, got, 2, "the post during the handoff, then the one after")
        # Once each: the old process does not replay what the successor delivered.
        assert [message["uniqueID"] for message in got] == ["during", "after"]
