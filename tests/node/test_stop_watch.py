"""A stop that overruns says which step it is at and where every task waits."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator

import pytest

from relay.node.stop_watch import StopWatch
from relay.process.periodic import every
from tests.support import WAIT


class Overruns(logging.Handler):
    """The node logger's warnings, and an event once the second one came."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.second = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if len(self.messages) == 2:
            self.second.set()


@pytest.fixture
def overruns() -> Iterator[Overruns]:
    handler = Overruns()
    logger = logging.getLogger("relay.node")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def test_an_overrunning_step_is_logged_with_where_each_task_waits(
    overruns: Overruns,
) -> None:
    stuck = asyncio.create_task(
        every(lambda: 3600.0, lambda: None, doing="nothing", log=logging.getLogger("t")),
        name="relay-stuck",
    )
    loop = asyncio.get_running_loop()
    never = loop.create_future()
    watch = StopWatch(loop.time() - 3.0, overrun_seconds=0.05)  # after a 3 s drain
    step = asyncio.create_task(watch.step("the broker", never))
    try:
        async with asyncio.timeout(WAIT):
            await overruns.second.wait()
    finally:
        watch.close()
        step.cancel()
        stuck.cancel()
    first, second = overruns.messages[:2]
    assert first.startswith(
        "stopping has taken 3 s (the drain included), still at: the broker; tasks waiting: "
    )
    # relay's own frame, then the innermost one (asyncio's sleep) that it waits in.
    assert re.search(
        r"relay-stuck: relay/process/periodic\.py:\d+ in every -> tasks\.py:\d+ in sleep", first
    )
    assert "still at: the broker" in second  # again, until the stop ends
