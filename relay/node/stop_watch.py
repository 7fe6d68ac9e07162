"""Saying where a node's stop is stuck, while it is stuck.

Past the drain, every step of ``Node.stop`` is bounded (a grace, a timeout),
and together they take about 3 s; a supervisor or systemd kills a process
that takes much longer, and the log would then end mid-stop with no word
of why. ``StopWatch`` runs those steps by name and, once they have taken
``OVERRUN_SECONDS``, logs the step under way and where every task waits
(``relay.process.waiting_tasks``), then again each ``OVERRUN_SECONDS`` until
the stop ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from relay.process.waiting_tasks import where_tasks_wait

log = logging.getLogger("relay.node")

#: How long the steps after the drain may take before the stop is reported as
#: overrunning. Short enough to be logged before a kill: a ``--workers``
#: supervisor kills an old worker 10 s after asking it to stop, and the drain
#: (``shutdown.drain_seconds``, 5 s by default) comes first.
OVERRUN_SECONDS = 4.0

T = TypeVar("T")


class StopWatch:
    """The step a stop is at, reported with every task's wait once it overruns."""

    def __init__(self, started: float, overrun_seconds: float = OVERRUN_SECONDS) -> None:
        """Watch from now on a stop that began at ``started`` (the loop's clock); ``close`` ends it.

        Call from the stopping task, once the drain is over.
        """
        self._loop = asyncio.get_running_loop()
        self._started = started
        self._period = overrun_seconds
        self._step = "starting"
        self._handle = self._loop.call_later(overrun_seconds, self._overrun)

    async def step(self, name: str, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` as the step called ``name``."""
        self._step = name
        return await awaitable

    def close(self) -> None:
        """The stop ended (or failed): report nothing more."""
        self._handle.cancel()

    def _overrun(self) -> None:
        self._handle = self._loop.call_later(self._period, self._overrun)
        try:
            waiting = "; ".join(where_tasks_wait()) or "none"
        except Exception as exc:  # a report must never be what breaks the stop
            waiting = f"unknown ({exc!r})"
        log.warning(
            "stopping has taken %.0f s (the drain included), still at: %s; tasks waiting: %s",
            self._loop.time() - self._started,
            self._step,
            waiting,
        )
