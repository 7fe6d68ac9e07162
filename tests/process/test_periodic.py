"""Periodic background work: rounds keep coming after one fails, and the interval is re-read."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from relay.process.periodic import every
from tests.support import WAIT

log = logging.getLogger("relay.test")


async def test_a_failing_round_is_logged_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rounds: list[int] = []
    third = asyncio.Event()

    def work() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("boom")
        if len(rounds) == 3:
            third.set()

    task = asyncio.create_task(every(lambda: 0.0, work, doing="testing", log=log, first_now=True))
    try:
        await asyncio.wait_for(third.wait(), WAIT)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert rounds[:3] == [0, 1, 2]
    (record,) = [r for r in caplog.records if r.name == "relay.test"]
    assert record.getMessage() == "error while testing; will try again"
    assert record.exc_info is not None


async def test_the_interval_is_asked_for_before_each_wait() -> None:
    asked: list[int] = []
    done = asyncio.Event()

    def interval() -> float:
        asked.append(len(asked))
        if len(asked) == 3:
            done.set()
        return 0.0

    task = asyncio.create_task(every(interval, lambda: None, doing="testing", log=log))
    try:
        await asyncio.wait_for(done.wait(), WAIT)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert asked[:3] == [0, 1, 2]


async def test_a_coroutine_round_is_awaited_and_one_that_fails_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rounds: list[int] = []
    second = asyncio.Event()

    async def work() -> None:
        await asyncio.sleep(0)  # a round that yields, as one asking other processes does
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("boom")
        second.set()

    task = asyncio.create_task(every(lambda: 0.0, work, doing="asking", log=log, first_now=True))
    try:
        await asyncio.wait_for(second.wait(), WAIT)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert rounds[:2] == [0, 1]
    (record,) = [r for r in caplog.records if r.name == "relay.test"]
    assert record.getMessage() == "error while asking; will try again"
