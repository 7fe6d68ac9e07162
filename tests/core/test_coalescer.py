"""Coalesced writes: what waits in one loop turn goes out together, in order, each message whole.

The window that holds writes opens only while the loop is busy writing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import orjson
import pytest

from relay.core.coalescer import (
    DEFAULT_MAX_WINDOW,
    FIRST_SLICE,
    LOAD_HIGH,
    LOAD_LOW,
    LOAD_SECONDS,
    SLICE,
    Coalescer,
    window_for,
)
from relay.core.notification import parse_notification
from relay.node.node import Node
from tests.support import FakeClock, notification


class Recorder:
    """A connection that counts its writes; each write takes ``cost`` seconds of ``clock``."""

    def __init__(self, clock: FakeClock | None = None, cost: float = 0.0) -> None:
        self.flushes = 0
        self.written_at: list[float] = []
        self._clock = clock
        self._cost = cost

    def write_queued(self, now: float) -> None:
        self.flushes += 1
        self.written_at.append(now)
        if self._clock is not None:
            self._clock.advance(self._cost)


class Loop:
    """What the coalescer schedules, run when the test says so."""

    def __init__(self) -> None:
        self.soon: list[Callable[[], None]] = []
        self.later: list[tuple[float, Callable[[], None]]] = []

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.soon.append(callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.later.append((delay, callback))

    def turn(self) -> None:
        """One turn: run what was scheduled before it (not what it schedules)."""
        ready, self.soon = self.soon, []
        for callback in ready:
            callback()

    def coalescer(self, clock: FakeClock) -> Coalescer:
        return Coalescer(clock=clock, call_soon=self.call_soon, call_later=self.call_later)


def busy(coalescer: Coalescer, loop: Loop, clock: FakeClock, share: float) -> None:
    """Run the coalescer for a few seconds with writes taking ``share`` of the time."""
    for _ in range(500):  # 5 s of 10 ms rounds, 5 time constants
        coalescer.mark(Recorder(clock, cost=0.010 * share), float("-inf"))
        loop.turn()
        clock.advance(0.010 * (1 - share))


def test_at_low_load_every_mark_is_written_on_the_next_turn() -> None:
    clock, loop = FakeClock(), Loop()
    coalescer = loop.coalescer(clock)
    first, second = Recorder(), Recorder()
    coalescer.mark(first, clock() - 0.010)  # written 10 ms ago: not held
    coalescer.mark(second, clock() - 0.001)
    assert len(loop.soon) == 1  # one flush for the turn
    assert not loop.later  # no timer
    loop.turn()
    assert (first.flushes, second.flushes) == (1, 1)
    assert coalescer.window == 0.0


def test_a_flush_writes_growing_slices_per_turn_and_later_marks_join_the_rest() -> None:
    clock, loop = FakeClock(), Loop()
    coalescer = loop.coalescer(clock)
    connections = [Recorder() for _ in range(3 * SLICE)]
    for connection in connections:
        coalescer.mark(connection, float("-inf"))
    written = []
    loop.turn()
    written.append(sum(c.flushes for c in connections))
    late = Recorder()  # a post read after the first slice: joins the same flush
    coalescer.mark(late, float("-inf"))
    while loop.soon:
        loop.turn()
        written.append(sum(c.flushes for c in connections) + late.flushes)
    slices = [b - a for a, b in zip([0, *written], written, strict=False)]
    assert slices[:4] == [FIRST_SLICE, 2 * FIRST_SLICE, 4 * FIRST_SLICE, 8 * FIRST_SLICE]
    assert max(slices) == SLICE
    assert [c.flushes for c in connections] == [1] * len(connections)
    assert late.flushes == 1
    # The queue ran dry: the next batch starts small again.
    again = [Recorder() for _ in range(SLICE)]
    for connection in again:
        coalescer.mark(connection, float("-inf"))
    loop.turn()
    assert sum(c.flushes for c in again) == FIRST_SLICE


def test_the_window_opens_only_while_the_loop_is_busy_writing() -> None:
    clock, loop = FakeClock(), Loop()
    coalescer = loop.coalescer(clock)
    busy(coalescer, loop, clock, share=0.02)
    assert coalescer.load == pytest.approx(0.02, abs=0.01)
    assert coalescer.window == 0.0
    busy(coalescer, loop, clock, share=0.5)
    assert coalescer.load == pytest.approx(0.5, abs=0.02)
    first, second = Recorder(), Recorder()
    coalescer.mark(first, clock() - 0.010)  # written 10 ms ago
    coalescer.mark(second, clock() - 0.001)
    assert coalescer.window == DEFAULT_MAX_WINDOW
    assert [round(delay, 3) for delay, _ in loop.later] == [0.020]  # one timer
    assert not loop.soon
    clock.advance(0.020)
    loop.later[0][1]()
    assert (first.flushes, second.flushes) == (1, 1)  # both, with the earliest


def test_time_spent_waiting_for_the_cpu_is_not_load() -> None:
    # A shared machine: flushes take long in elapsed time, but the loop's
    # own CPU time in them is small; bursts must not wait for a window then.
    clock, cpu, loop = FakeClock(), FakeClock(), Loop()
    coalescer = Coalescer(
        clock=clock, cpu_clock=cpu, call_soon=loop.call_soon, call_later=loop.call_later
    )
    busy(coalescer, loop, clock, share=0.5)  # the wall clock moves in the writes, the CPU's not
    assert coalescer.load == 0.0
    coalescer.mark(Recorder(), clock() - 0.001)
    assert not loop.later
    assert len(loop.soon) == 1


def test_the_window_closes_once_the_load_has_decayed() -> None:
    clock, loop = FakeClock(), Loop()
    coalescer = loop.coalescer(clock)
    busy(coalescer, loop, clock, share=0.5)
    clock.advance(5 * LOAD_SECONDS)  # quiet since
    assert coalescer.load < LOAD_LOW
    connection = Recorder()
    coalescer.mark(connection, clock() - 0.001)
    assert not loop.later
    loop.turn()
    assert connection.flushes == 1


def test_the_window_grows_with_the_load_between_the_bounds() -> None:
    assert window_for(0.0, 0.030) == 0.0
    assert window_for(LOAD_LOW, 0.030) == 0.0
    assert window_for((LOAD_LOW + LOAD_HIGH) / 2, 0.030) == pytest.approx(0.015)
    assert window_for(LOAD_HIGH, 0.030) == pytest.approx(0.030)
    assert window_for(1.0, 0.030) == pytest.approx(0.030)


def test_a_failing_connection_does_not_stop_the_flush() -> None:
    clock, loop = FakeClock(), Loop()
    coalescer = loop.coalescer(clock)

    class Broken(Recorder):
        def write_queued(self, now: float) -> None:
            raise OSError("gone")

    fine = Recorder()
    coalescer.mark(Broken(), 0.0)
    coalescer.mark(fine, 0.0)
    loop.turn()
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
