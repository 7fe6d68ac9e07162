"""Background work done again and again: the one way relay runs a periodic task.

``every`` runs one round of ``work`` per interval until it is cancelled. A
round that raises is logged, naming what it was doing, and the loop goes on:
a periodic task that died on one bad round would stop for good, silently.
The interval is asked for before each wait, so a reload's new value applies
from the next round.
"""

from __future__ import annotations

import asyncio
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

    ``doing`` says what a round does, for the log line of one that fails.
    """
    if first_now:
        _round(work, doing, log)
    while True:
        await asyncio.sleep(interval())
        _round(work, doing, log)


def _round(work: Callable[[], object], doing: str, log: logging.Logger) -> None:
    try:
        work()
    except Exception:
        log.exception("error while %s; will try again", doing)
