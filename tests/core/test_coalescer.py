"""Coalesced writes: bursts to one browser go out together, in order, each message whole."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import orjson

from relay.core.coalescer import Coalescer
from relay.core.notification import parse_notification
from relay.node.node import Node
from tests.support import FakeClock, notification


class Recorder:
    def __init__(self) -> None:
        self.flushes = 0

    def write_queued(self) -> None:
        self.flushes += 1


def test_one_flush_per_window_for_every_marked_connection() -> None:
    clock = FakeClock()
    scheduled: list[tuple[float, Callable[[], None]]] = []
    coalescer = Coalescer(
        clock=clock, call_later=lambda delay, callback: scheduled.append((delay, callback))
    )
    first, second = Recorder(), Recorder()
    coalescer.mark(first, clock() - 0.010)  # written 10 ms ago
    coalescer.mark(second, clock() - 0.001)
    assert [round(delay, 3) for delay, _ in scheduled] == [0.020]  # one timer
    scheduled[0][1]()
    assert (first.flushes, second.flushes) == (1, 1)
    coalescer.mark(first, clock())
    assert len(scheduled) == 2  # a new burst, a new timer


def test_a_failing_connection_does_not_stop_the_flush() -> None:
    calls: list[Callable[[], None]] = []
    coalescer = Coalescer(clock=FakeClock(), call_later=lambda _, callback: calls.append(callback))

    class Broken(Recorder):
        def write_queued(self) -> None:
            raise OSError("gone")

    fine = Recorder()
    coalescer.mark(Broken(), 0.0)
    coalescer.mark(fine, 0.0)
    calls[0]()
    assert fine.flushes == 1


class CountingTransport:
    """Wraps a transport to count writes (uvloop's cannot be patched in place)."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        self.writes.append(len(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def test_a_burst_is_coalesced_and_arrives_whole_in_order_once(
    node: Node, open_browser: Callable[..., Any]
) -> None:
    browser = await open_browser()
    await browser.subscribe("PHID-BURST")
    (connection,) = node.client_listeners[0]._connections
    counting = CountingTransport(connection._transport)
    connection._transport = cast(asyncio.Transport, counting)
    for n in range(50):  # faster than one write per message: all in one loop turn
        node.hub.publish(
            "default", parse_notification(orjson.dumps(notification("PHID-BURST", n=n)))
        )
    received = await browser.drain()
    assert [message["n"] for message in received] == list(range(50))
    # The first message went out at once; the other 49 in one coalesced write.
    assert len(counting.writes) <= 3, counting.writes
    assert max(counting.writes) > 40 * 100


async def test_replies_never_overtake_queued_messages(
    node: Node, open_browser: Callable[..., Any]
) -> None:
    browser = await open_browser()
    await browser.subscribe("PHID-ORDER")
    for n in range(5):
        node.hub.publish(
            "default", parse_notification(orjson.dumps(notification("PHID-ORDER", n=n)))
        )
    # The pong is queued behind the five messages, not written before them.
    assert [m["n"] for m in await browser.drain()] == [0, 1, 2, 3, 4]
