"""A load generator of new browsers: one connects every so often while a node changes hands.

The ``handoff`` scenario's question "is any connect refused?" needs browsers
that arrive during the handoff, not ones connected before it. Each one opens,
handshakes, subscribes to a key of its own (nothing is posted to it) and waits
for the pong that confirms the subscription, then closes; every attempt is
reported with when it began and ended, so the coordinator can tell which fell
inside the handoff.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.agent import Agent
from bench.wsclient import LeanBrowser, Tally, subscribe_frame

#: Longest one browser may take from connect to its confirmed subscription.
JOIN_TIMEOUT = 10.0
#: The key each joining browser subscribes to (never posted to, so nothing arrives).
JOINER_KEY = "PHID-BENCH-JOINER-{index:08d}"


class JoinerAgent(Agent):
    """Opens browsers at ``rate`` per second for ``duration`` seconds on ``go``."""

    async def setup(self) -> dict[str, Any]:
        """Nothing to open before ``go``."""
        return {"ready": 0}

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        """``go``: open browsers on schedule; report each attempt as (began, ended, outcome).

        The outcome is ``"ok"`` or the exception's class name (a refused
        connect is ``ConnectionRefusedError``, a handshake cut short
        ``ConnectionError``). Times are monotonic seconds, as the coordinator's.
        """
        spec = self.spec
        tally = Tally()
        attempts: list[tuple[float, float, str]] = []
        started = time.monotonic()

        async def join(index: int) -> None:
            began = time.monotonic()
            outcome = "ok"
            try:
                async with asyncio.timeout(JOIN_TIMEOUT):
                    browser = await LeanBrowser.connect(
                        spec["port"],
                        "/",
                        subscribe_frame([JOINER_KEY.format(index=index)]),
                        spec["tag"],
                        1,
                        tally,
                        spec.get("source"),
                    )
                assert browser.transport is not None
                browser.transport.close()
            except (OSError, TimeoutError) as exc:
                outcome = type(exc).__name__
            attempts.append((began, time.monotonic(), outcome))

        tasks = []
        index = 0
        while (due := started + index / spec["rate"]) < started + spec["duration"]:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            tasks.append(asyncio.create_task(join(index)))
            index += 1
        await asyncio.gather(*tasks)
        return {"attempts": attempts}

    def teardown(self) -> None:
        """Every browser closed itself once subscribed."""
