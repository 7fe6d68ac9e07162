"""Cancelling tasks for sure: again, for as long as one swallows the cancel.

redis-py reads under ``asyncio.timeout``, and a cancel that lands as such a
read times out can be lost (redis-py issue 2551): ``get_message`` returns
None, and the loop around it goes on reading. A plain ``task.cancel()`` then
``await task`` waits for ever: a worker handing over in a roll once spent
more than 8 s stopping in the broker link's receive loop, and the roll waited
on it (CI, 2026-12-07).
"""

from __future__ import annotations

import asyncio
from typing import Any

#: How long a cancelled task may take to end before it is cancelled again.
RECANCEL_SECONDS = 0.1


async def cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks`` and return once every one has ended, cancelling again any that goes on.

    What each ended with (its result, its exception) stays in the task.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_SECONDS)
