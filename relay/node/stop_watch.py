"""Saying where a node's stop is stuck, while it is stuck.

Past the drain, every step of ``Node.stop`` is bounded (a grace, a timeout),
so the whole takes a few seconds; a supervisor or systemd kills a process
that takes much longer, and the log would then end mid-stop with no word
of why. ``StopWatch`` runs the steps by name and, once the stop has taken
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

#: How long the steps after the drain may take before the stop is reported
#: as overrunning: their bounds add up to about 4 s; a ``--workers``
#: supervisor kills an old worker after 10 s.
OVERRUN_SECONDS = 5.0

T = TypeVar("T")


class StopWatch:
    """The step a stop is at, reported with every task's wait once it overruns."""

    def __init__(self, overrun_seconds: float = OVERRUN_SECONDS) -> None:
        """Start watching now (call from the stopping task); ``close`` ends it."""
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()
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
        elapsed = self._loop.time() - self._started
        log.warning(
            "stopping has taken %.0f s, still at: %s; tasks waiting: %s",
            elapsed,
            self._step,
            "; ".join(where_tasks_wait()) or "none",
        )
        self._handle = self._loop.call_later(self._period, self._overrun)
