"""The roll's choice to adopt a successor: never one that exited, even after its READY=1."""

from __future__ import annotations

import asyncio
from typing import Any

from relay.config import LimitsConfig
from relay.links.backoff import Backoff
from relay.workers.roll import TAKE_OVER_TIMEOUT, replace, take_over_seconds
from relay.workers.slot import Slot


class _Process:
    """A worker process that has exited (``returncode``) or runs until told to."""

    def __init__(self, pid: int, returncode: int | None = None) -> None:
        self.pid = pid
        self.returncode = returncode
        self._ended = asyncio.Event()
        if returncode is not None:
            self._ended.set()

    async def wait(self) -> int:
        await self._ended.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, number: int) -> None:
        self.returncode = -number
        self._ended.set()

    def kill(self) -> None:
        self.send_signal(9)


async def test_a_successor_that_said_ready_then_exited_is_not_adopted() -> None:
    old = _Process(100)
    slot = Slot(index=0, backoff=Backoff(0.1, 1.0), process=old, ready=True)

    async def start(slot: Slot, **_: Any) -> _Process:
        # Its MAINPID and READY=1 came, then it exited (a handoff that failed late).
        slot.main_pid = 200
        slot.readied.set()
        return _Process(200, returncode=1)

    assert not await replace(slot, start, lambda: 0.0)
    assert slot.process is old
    assert slot.successor is None
    assert old.returncode is None  # the old worker serves on


async def test_a_successor_silent_past_the_deadline_is_stopped_and_the_worker_serves_on() -> None:
    old = _Process(100)
    slot = Slot(index=0, backoff=Backoff(0.1, 1.0), process=old, ready=True)
    silent = _Process(300)  # runs, but never reports ready

    async def start(slot: Slot, **_: Any) -> _Process:
        return silent

    assert not await replace(slot, start, lambda: 0.0, deadline=0.2)
    assert silent.returncode is not None  # stopped
    assert slot.process is old
    assert old.returncode is None


def test_the_take_over_deadline_outlasts_the_old_workers_own_waits() -> None:
    """A handshake_seconds of 90 once meant a successor stopped mid-way, at a fixed 60 s."""
    assert take_over_seconds(LimitsConfig()) >= TAKE_OVER_TIMEOUT
    limits = LimitsConfig(handshake_seconds=90)
    waits = limits.handshake_seconds + limits.admin_header_seconds
    assert take_over_seconds(limits) > waits + limits.handoff_answer_seconds
