"""cancel_and_wait: a task that swallows a cancel still ends."""

from __future__ import annotations

import asyncio

from relay.process.cancelling import cancel_and_wait
from tests.support import WAIT


async def test_a_task_that_swallows_a_cancel_is_cancelled_again() -> None:
    reads = 0

    async def reading_under_a_timeout() -> None:
        nonlocal reads
        while True:
            reads += 1
            try:
                await asyncio.sleep(WAIT)
            except asyncio.CancelledError:
                # As a read whose timeout and cancel coincide: the cancel comes out as
                # "no message", and the loop reads on.
                if reads > 1:
                    raise

    task = asyncio.create_task(reading_under_a_timeout())
    await asyncio.sleep(0)  # it reads
    async with asyncio.timeout(WAIT):
        await cancel_and_wait(task)
    assert task.cancelled()
    assert reads == 2


async def test_tasks_keep_what_they_ended_with() -> None:
    async def fails() -> None:
        raise ValueError("kept")

    failed = asyncio.create_task(fails())
    waiting = asyncio.create_task(asyncio.sleep(WAIT))
    await asyncio.sleep(0)
    await cancel_and_wait(failed, waiting)
    assert isinstance(failed.exception(), ValueError)
    assert waiting.cancelled()
