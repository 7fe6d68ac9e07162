"""The end of a handoff: certain, and clean in the logs.

In process, both sides in the test's event loop; each watches the other's
pid through a stand-in (the other side is this very process).

- A successor that closes the channel as soon as it has said ``DONE`` (as
  one did before it waited for the old process to close it) leaves nothing
  unread: the old process forwards nothing after its own ``DONE``. It used
  to forward what it routed until it read the successor's ``DONE``; the
  close then reset the channel, the kernel reported the reset before the
  ``DONE`` queued behind it, and the old process logged ``handoff channel
  failed: connection reset``, served again, and never exited by itself (a
  ``--workers`` roll of 100,000 browsers had it killed 10 s later).
- An old process that hangs after its ``DONE`` (it never reads the
  successor's) used to leave the successor assuming success after
  ``limits.handoff_answer_seconds``, while the old one could still wake, give up and serve
  beside it: the successor now kills it, says so, and serves on.
- Admin connections the successor cannot read (a garbled
  ``ADMIN_CONNECTIONS``) fail the handoff there, and the old process, which
  kept its own copies, serves them again.
- A successor of an older release, whose ``HELLO`` does not offer to take
  admin connections, is sent none, and the handoff completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.config import parse_config
from relay.core.notification import parse_notification
from relay.errors import StartupError
from relay.links.handoff_wire import Kind
from relay.listeners.movable import MovableConnection
from relay.node import handoff, handoff_abort, handoff_take
from relay.node.handoff_abort import Moving
from relay.node.handoff_take import adopt_all, take_over
from tests.broker.test_broker import StartNode, open_browser
from tests.node.handoff_parts import (
    handoff_point,
    pooled_connection,
    post_over,
    read_status,
    stand_ins,
)
from tests.support import WAIT, local_config


def _config(answer_seconds: float = 30.0) -> dict[str, Any]:
    return local_config(
        limits={"max_connections_per_ip": 0, "handoff_answer_seconds": answer_seconds}
    )


def _problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("relay.handoff") and record.levelno >= logging.WARNING
    ]


async def test_a_successor_that_closes_at_once_after_its_done_ends_the_handoff_cleanly(
    start_node: StartNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    watched = stand_ins(monkeypatch, handoff_abort, handoff_take)
    caplog.set_level(logging.INFO, "relay.handoff")
    old = await start_node(_config(), connection_factory=MovableConnection)
    browser = await open_browser(old, "PHID-E")
    done = asyncio.Event()
    async with handoff_point(old, tmp_path, on_done=done.set) as (point, path):
        successor, channel, _resumption = await take_over(parse_config(_config()), path)
        try:
            # The successor's side by hand: answer each batch, read up to DONE.
            while True:
                kind, body, fds = await channel.receive()
                for fd in fds:
                    os.close(fd)  # the browsers and admin sockets stay the old one's here
                if kind is Kind.CONNECTIONS:
                    channel.send(Kind.ADOPTED, {"batch": body["batch"], "count": len(fds)})
                elif kind is Kind.DONE:
                    break
            # The old process routes a message now, waiting for the successor's
            # DONE (a peer's, or one Redis returns); then that DONE comes, and
            # the channel closes at once, before anything more is read here.
            raw = orjson.dumps({"subscribers": ["PHID-E"], "uniqueID": "late"})
            old.hub.publish("default", parse_notification(raw))
            channel.send(Kind.DONE, {})
            channel.close()
            handing = point._task
            assert handing is not None
            await asyncio.wait_for(handing, WAIT)
        finally:
            channel.close()
            await successor.stop()
    assert done.is_set()  # so the old process exits by itself
    assert "handoff done: 1 browser connections moved" in caplog.text
    assert not _problems(caplog)
    assert not any(process.killed for process in watched)
    await browser.ws.close()


async def test_a_successor_kills_an_old_process_that_hangs_after_its_done(
    start_node: StartNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    watched = stand_ins(monkeypatch, handoff_abort, handoff_take)
    answer = handoff._answer
    hung = asyncio.Event()

    async def hang_at_the_end(moving: Moving, expected: Kind) -> dict[str, object]:
        if expected is Kind.DONE:  # alive, but it never reads the successor's DONE
            hung.set()
            await asyncio.Event().wait()
        return await answer(moving, expected)

    monkeypatch.setattr(handoff, "_answer", hang_at_the_end)
    old = await start_node(_config(), connection_factory=MovableConnection)
    browser = await open_browser(old, "PHID-E")
    async with handoff_point(old, tmp_path) as (point, path):
        # The successor gives the old process 0.2 s to confirm the end.
        successor, channel, resumption = await take_over(parse_config(_config(0.2)), path)
        try:
            async with asyncio.timeout(WAIT):
                await adopt_all(successor, channel, resumption)  # serves on
            assert hung.is_set()
            [old_process] = [process for process in watched if process.by == handoff_take.__name__]
            assert old_process.pid == os.getpid()  # the old side: this process here
            assert old_process.killed
            assert [process.killed for process in watched] == [False, True]  # not the successor
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
    await browser.ws.close()


async def test_admin_connections_the_successor_cannot_read_are_served_by_the_old_process(
    start_node: StartNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stand_ins(monkeypatch, handoff_abort, handoff_take)
    garbled: dict[str, Any] = {"listeners": "garbled"}
    monkeypatch.setattr(handoff, "admin_connections_body", lambda _listeners: garbled)
    old = await start_node(_config(), connection_factory=MovableConnection)
    port = old.admin_addresses[0][1]
    # An application server's pool, opened before the handoff and used after it.
    pooled = await pooled_connection(port)
    with pooled:
        async with handoff_point(old, tmp_path) as (point, path):
            successor, channel, resumption = await take_over(parse_config(_config()), path)
            try:
                with pytest.raises(StartupError, match="not a list of admin listeners"):
                    await adopt_all(successor, channel, resumption)
            finally:
                channel.close()
                await successor.stop()
            handing = point._task
            assert handing is not None
            await asyncio.wait_for(handing, WAIT)  # it gave up, and serves again
            assert "handoff failed, this process keeps serving" in caplog.text
            assert await asyncio.to_thread(post_over, pooled, "pooled") == 200


async def test_an_older_successor_is_sent_no_admin_connections_and_the_handoff_completes(
    start_node: StartNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A successor of a release before ``ADMIN_CONNECTIONS`` says nothing of them in its HELLO.

    It would refuse the message kind and fail the handoff, so the old process
    sends it none: it closes its silent connections itself, as releases
    before did, and every browser still moves.
    """
    stand_ins(monkeypatch, handoff_abort, handoff_take)
    caplog.set_level(logging.INFO, "relay.handoff")
    monkeypatch.setattr(
        handoff_take,
        "hello_body",
        lambda version, pid, _pidfile=None: {"version": version, "pid": pid},
    )
    old = await start_node(_config(), connection_factory=MovableConnection)
    port = old.admin_addresses[0][1]
    browser = await open_browser(old, "PHID-E")
    pooled = await pooled_connection(port)
    with pooled:
        async with handoff_point(old, tmp_path) as (point, path):
            successor, channel, resumption = await take_over(parse_config(_config()), path)
            try:
                async with asyncio.timeout(WAIT):
                    await adopt_all(successor, channel, resumption)
                handing = point._task
                assert handing is not None
                await asyncio.wait_for(handing, WAIT)
                assert "handoff done: 1 browser connections moved" in caplog.text
                assert "passed on" not in caplog.text
                assert not _problems(caplog)
                # Closed by the old process, not left to hang: the client's pool opens anew.
                pooled.settimeout(WAIT)
                assert await asyncio.to_thread(pooled.recv, 1) == b""
                assert (await read_status(successor.admin_addresses[0][1]))["clients.active"] == 1
            finally:
                channel.close()
                await successor.stop()
    await browser.ws.close()
