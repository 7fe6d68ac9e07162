"""The graceful drain on SIGTERM: not-ready first, new browsers refused, closes spread out."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from relay.listeners.drain import DrainPlan, Leaving, drain
from tests.support import WAIT, Admin, RelayProcess, local_config

TOOLS = Path(__file__).parent.parent / "tools"


def test_the_plan_spreads_closes_evenly_over_the_window() -> None:
    plan = DrainPlan.spread(1000, window=5.0, min_rate=100.0)
    assert plan.duration == 5.0
    assert plan.due(0.0) == 1  # the first at once
    assert plan.due(2.5) == 501
    assert plan.due(4.999) == 1000
    assert plan.due(5.0) == 1000
    assert [plan.due(t / 10) for t in range(0, 51, 10)] == [1, 201, 401, 601, 801, 1000]
    assert plan.next_at(500) == 2.5


def test_few_browsers_do_not_wait_for_the_whole_window() -> None:
    # At the floor of 100 closes a second, 50 browsers take half a second.
    assert DrainPlan.spread(50, window=5.0, min_rate=100.0).duration == 0.5
    assert DrainPlan.spread(1, window=5.0, min_rate=100.0).duration == 0.01
    assert DrainPlan.spread(0, window=5.0, min_rate=100.0) == DrainPlan(0, 0.0)
    # A zero window closes everyone at once.
    assert DrainPlan.spread(1000, window=0.0, min_rate=100.0).due(0.0) == 1000


class Recorded:
    """A stand-in connection that notes when it was asked to leave."""

    def __init__(self, times: list[float], quarter: asyncio.Event) -> None:
        self.times = times
        self.quarter = quarter

    def going_away(self) -> None:
        self.times.append(asyncio.get_running_loop().time())
        if len(self.times) == 50:
            self.quarter.set()


async def test_drain_follows_the_plan_and_a_hurry_closes_the_rest_at_once() -> None:
    times: list[float] = []
    quarter = asyncio.Event()
    connections = [Recorded(times, quarter) for _ in range(200)]
    hurry = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(drain(connections, DrainPlan(200, 4.0), hurry=hurry))
    async with asyncio.timeout(WAIT):
        await quarter.wait()  # a quarter of the way: one second in
    hurried_at = loop.time()
    hurry.set()
    async with asyncio.timeout(WAIT):
        await task
    assert len(times) == 200
    # The first quarter came spread over about a second, not at once...
    assert 0.7 < times[49] - started < 1.5
    # ...and the hurry closed the other 150 without waiting for their turn.
    assert times[-1] - hurried_at < 0.1


class Broken:
    """A connection whose close fails."""

    def going_away(self) -> None:
        raise RuntimeError("a bug in one connection")


async def test_one_connection_failing_to_close_does_not_stop_the_drain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    times: list[float] = []
    quarter = asyncio.Event()
    connections: list[Leaving] = [Recorded(times, quarter), Broken(), Recorded(times, quarter)]
    async with asyncio.timeout(WAIT):
        await drain(connections, DrainPlan(3, 0.05), hurry=asyncio.Event())
    assert len(times) == 2
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "closing a browser during the drain failed"
    ]


async def test_new_browsers_get_503_and_readiness_turns_503_while_draining(
    start_node: Any, session: aiohttp.ClientSession
) -> None:
    node = await start_node(local_config(shutdown={"drain_seconds": 2.0, "drain_min_rate": 1}))
    port = node.client_addresses[0][1]
    admin = Admin(session, node.admin_addresses[0][1])
    browsers = [await websockets.connect(f"ws://127.0.0.1:{port}/") for _ in range(10)]
    stopping = asyncio.create_task(node.stop())
    async with session.get(admin.base + "/health/ready") as ready:
        assert ready.status == 503
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"ws://127.0.0.1:{port}/")
    assert refused.value.response.status_code == 503
    assert b"shutting down" in refused.value.response.body
    # One browser every 0.2 s: when the first has gone, the others are still here.
    closing = [asyncio.create_task(browser.wait_closed()) for browser in browsers]
    await asyncio.wait(closing, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    assert not stopping.done()
    open_ones = [b for b in browsers if b.state is websockets.State.OPEN]
    assert 0 < len(open_ones) < 10
    async with asyncio.timeout(WAIT):
        await stopping
    for browser in browsers:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(browser.recv(), WAIT)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001


@pytest.mark.slow
async def test_sigterm_closes_1000_browsers_spread_over_the_drain_window(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    window, count = 3.0, 1000
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(local_config(shutdown={"drain_seconds": window})))
    relay = await asyncio.to_thread(RelayProcess(path).start)
    relay.follow_log()
    port = relay.client_ports[0]
    admin = Admin(session, relay.admin_ports[0])
    leavers = await asyncio.create_subprocess_exec(
        sys.executable,
        str(TOOLS / "leavers.py"),
        str(port),
        str(count),
        str(window + WAIT),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert leavers.stdout is not None
        async with asyncio.timeout(WAIT * 3):
            assert await leavers.stdout.readline() == b"ready\n"
        assert (await admin.status())["clients.active"] == count
        async with session.get(admin.base + "/health/ready") as ready:
            assert ready.status == 200
        signalled = time.monotonic()
        relay.signal(signal.SIGTERM)

        # Readiness turns 503 while the browsers are still being closed.
        async def not_ready() -> tuple[float, int]:
            while True:
                async with session.get(admin.base + "/health/ready") as ready:
                    if ready.status == 503:
                        return time.monotonic(), (await admin.status())["clients.active"]
                await asyncio.sleep(0.01)

        async with asyncio.timeout(WAIT):
            not_ready_at, still_connected = await not_ready()
        # A browser arriving now is refused, not accepted and closed later.
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"ws://127.0.0.1:{port}/")
        refused_at = time.monotonic()
        async with asyncio.timeout(window + WAIT):
            report = orjson.loads(await leavers.stdout.readline())
            await leavers.wait()
        status, output = await asyncio.to_thread(relay.wait, window + WAIT)
        exited = time.monotonic()
    finally:
        if leavers.returncode is None:
            leavers.kill()
            await leavers.wait()
        relay.kill()
    assert status == 0, output
    assert refused.value.response.status_code == 503
    assert Counter((r["code"], r["end"]) for r in report) == {(1001, "eof"): count}
    closes = sorted(r["at"] for r in report)
    first, last = closes[0] - signalled, closes[-1] - signalled
    busiest = max(Counter(int((at - closes[0]) * 10) for at in closes).values())
    print(
        f"closes from {first:.2f} s to {last:.2f} s after SIGTERM; busiest 100 ms: {busiest}; "
        f"not ready after {not_ready_at - signalled:.2f} s with {still_connected} connected; "
        f"exit after {exited - signalled:.2f} s"
    )
    assert first < 1.0  # the drain starts at once...
    assert window * 0.8 < last - first < window + 1.0  # ...and takes the window
    assert busiest < count / 10  # not all in one instant (evenly: ~33 per 100 ms)
    assert not_ready_at < closes[-1]
    assert refused_at < closes[-1]
    assert still_connected > 0
    assert exited - signalled < window + 5.0


@pytest.mark.slow
async def test_a_second_sigterm_closes_the_remaining_browsers_at_once(tmp_path: Path) -> None:
    # A drain that would take 20 s: one browser a second.
    path = tmp_path / "relay.json"
    config = local_config(shutdown={"drain_seconds": 20, "drain_min_rate": 0.5})
    path.write_bytes(orjson.dumps(config))
    relay = await asyncio.to_thread(RelayProcess(path).start)
    relay.follow_log()
    port = relay.client_ports[0]
    try:
        browsers = [await websockets.connect(f"ws://127.0.0.1:{port}/") for _ in range(10)]
        relay.signal(signal.SIGTERM)
        closing = [asyncio.create_task(browser.wait_closed()) for browser in browsers]
        await asyncio.wait(closing, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        assert not all(task.done() for task in closing)
        relay.signal(signal.SIGTERM)
        hurried = time.monotonic()
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*closing)
        closed_after = time.monotonic() - hurried
        status, output = await asyncio.to_thread(relay.wait)
    finally:
        relay.kill()
    print(f"all closed {closed_after:.2f} s after the second SIGTERM")
    assert closed_after < 2.0  # not one a second for the other 18 s
    assert status == 0
    assert [browser.close_code for browser in browsers] == [1001] * 10
    assert "received SIGTERM again, closing the remaining browsers at once" in output
