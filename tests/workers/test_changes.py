"""Reloads and upgrades of a ``--workers`` node take turns, each told to systemd (no processes)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import pytest

from relay.links.backoff import Backoff
from relay.workers.changes import Changes
from relay.workers.slot import Slot


class FakeSystemd:
    """Keeps what the supervisor tells systemd."""

    watchdog_interval: float | None = None

    def __init__(self) -> None:
        self.told: list[str] = []
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    def notify(self, *assignments: str) -> None:
        self._tell("\n".join(assignments))

    def ready(self, status: str) -> None:
        self._tell("READY=1")

    def reloading(self) -> None:
        self._tell("RELOADING=1")

    def _tell(self, text: str) -> None:
        self.told.append(text)
        self._queue.put_nowait(text)

    async def next(self) -> str:
        """The next thing told (bounded)."""
        async with asyncio.timeout(1):
            return await self._queue.get()

    def watchdog(self) -> None:
        pass


class FakeWorker:
    """A worker process that takes signals and never ends."""

    pid = 4242
    returncode = None

    def __init__(self) -> None:
        self.signals: list[int] = []

    def send_signal(self, number: int) -> None:
        self.signals.append(number)


async def _no_new_code(slot: Slot, **_: Any) -> Any:
    raise OSError("no such interpreter")  # the roll stops at the first worker


def _slot(worker: FakeWorker) -> Slot:
    slot = Slot(0, Backoff(0.1, 1.0))
    slot.process = worker  # type: ignore[assignment]
    slot.ready = True
    return slot


async def test_an_upgrade_asked_for_during_a_reload_follows_it_and_each_is_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slot = _slot(FakeWorker())
    systemd = FakeSystemd()
    changes = Changes([slot], systemd, lambda: "serving", _no_new_code, lambda: 0.0)
    caplog.set_level(logging.INFO, logger="relay.workers")
    reload = asyncio.create_task(changes.reload())
    # The reload begins: it signals the worker, and waits for its READY=1.
    assert await systemd.next() == "RELOADING=1"
    assert changes.wants_roll()
    assert not changes.wants_roll()  # one upgrade at a time, waiting or running
    roll = asyncio.create_task(changes.roll())
    slot.readied.set()  # the worker reloaded
    assert await systemd.next() == "READY=1"  # the reload's end...
    assert "a reload of the workers is under way; the upgrade follows once it ends" in caplog.text
    assert await systemd.next() == "RELOADING=1"  # ... then the upgrade's begin and end
    assert await systemd.next() == "READY=1"
    await asyncio.gather(reload, roll)
    assert "cannot start the new code" in caplog.text  # the roll stopped: READY=1 all the same
    assert changes.wants_roll()  # and another SIGUSR2 may start over


async def test_a_reload_asked_for_during_an_upgrade_follows_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = FakeWorker()
    slot = _slot(worker)
    systemd = FakeSystemd()
    started = asyncio.Event()
    go_on = asyncio.Event()

    async def slow_new_code(slot: Slot, **_: Any) -> Any:
        started.set()
        await go_on.wait()
        raise OSError("no such interpreter")

    changes = Changes([slot], systemd, lambda: "serving", slow_new_code, lambda: 0.0)
    caplog.set_level(logging.INFO, logger="relay.workers")
    assert changes.wants_roll()
    roll = asyncio.create_task(changes.roll())
    assert await systemd.next() == "RELOADING=1"
    await started.wait()  # the roll is starting the new code
    reload = asyncio.create_task(changes.reload())
    go_on.set()
    assert await systemd.next() == "READY=1"  # the roll's end (it stopped: no new code)...
    assert "this reload follows once it ends" in caplog.text
    assert not worker.signals  # ... before the worker is told to reload
    assert await systemd.next() == "RELOADING=1"
    assert worker.signals == [signal.SIGHUP]
    slot.readied.set()
    assert await systemd.next() == "READY=1"
    await asyncio.gather(roll, reload)
