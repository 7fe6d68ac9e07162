"""Background work done again and again: the one way relay runs a periodic task.

``every`` runs one round of ``work`` per interval until it is cancelled. A
round that raises is logged, naming what it was doing, and the loop goes on:
a periodic task that died on one bad round would stop for good, silently.
The interval is asked for before each wait, so a reload's new value applies
from the next round.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable


async def every(
    interval: Callable[[], float],
    work: Callable[[], object],
    *,
    doing: str,
    log: logging.Logger,
    first_now: bool = False,
) -> None:
    """Run ``work()`` every ``interval()`` seconds, the first time at once if ``first_now``.

    A ``work`` that returns an awaitable (a coroutine function) is awaited:
    the next wait starts once the round is over. ``doing`` says what a round
    does, for the log line of one that fails.
    """
    if first_now:
        await _round(work, doing, log)
    while True:
        await asyncio.sleep(interval())
        await _round(work, doing, log)


async def _round(work: Callable[[], object], doing: str, log: logging.Logger) -> None:
    try:
        result = work()
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("error while %s; will try again", doing)
