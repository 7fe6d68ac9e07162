"""Reloads (SIGHUP) and upgrades (SIGUSR2) of a ``--workers`` node: one at a time, told to systemd.

Both watch each slot's ready signal (``Slot.readied``: a worker says
``READY=1`` once its reload is done, a successor once it took over), so run
together each would take the other's ``READY=1`` for its own, or clear it
before the other saw it: a reload during a roll used to wait its whole
``RELOAD_TIMEOUT``. So they take turns: a SIGHUP during a roll reloads once
the roll ends (the workers replaced before the config file changed read it
as it was), a SIGUSR2 during a reload rolls once the reload ends; each says
so in the log.

Each tells systemd ``RELOADING=1`` (with ``MONOTONIC_USEC=``) when it
begins and ``READY=1`` when it ends, done or stopped at a failure, so
``systemctl reload`` (either signal as ``ExecReload=``) returns only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Protocol

from relay.workers.roll import TAKE_OVER_TIMEOUT, StartSuccessor, roll
from relay.workers.slot import Slot

log = logging.getLogger("relay.workers")

#: Time workers get to finish a reload before the node reports ready anyway.
RELOAD_TIMEOUT = 10.0


class ServiceManager(Protocol):
    """Who the supervisor reports the node's state to (``relay.process.systemd.Notifier``)."""

    #: Seconds between watchdog pings it expects, or None.
    watchdog_interval: float | None

    def notify(self, *assignments: str) -> None:
        """Send raw assignments such as ``STATUS=...``."""

    def ready(self, status: str) -> None:
        """The node serves."""

    def reloading(self) -> None:
        """A reload has begun."""

    def watchdog(self) -> None:
        """The supervisor is alive."""


class Changes:
    """The reloads and upgrades of one node's workers, in turn."""

    def __init__(
        self,
        slots: Sequence[Slot],
        systemd: ServiceManager,
        describe: Callable[[], str],
        start: StartSuccessor,
        clock: Callable[[], float],
        take_over_seconds: float = TAKE_OVER_TIMEOUT,
    ) -> None:
        """Change the workers in ``slots``; ``describe`` gives systemd's status line.

        ``take_over_seconds``: how long each successor of a roll may take over in.
        """
        self._slots = slots
        self._systemd = systemd
        self._describe = describe
        self._start = start
        self._clock = clock
        self._take_over_seconds = take_over_seconds
        self._turn = asyncio.Lock()
        self._rolling = False

    def wants_roll(self) -> bool:
        """SIGUSR2: whether to start a roll; False (logged) when one is under way or waiting."""
        if self._rolling:
            log.warning("an upgrade of the workers is under way already; SIGUSR2 ignored")
            return False
        self._rolling = True
        return True

    async def roll(self) -> None:
        """Replace each worker in turn with the code installed now (after :meth:`wants_roll`)."""
        try:
            if self._turn.locked():
                log.info("a reload of the workers is under way; the upgrade follows once it ends")
            async with self._turn:
                log.info("received SIGUSR2, replacing the %d workers in turn", len(self._slots))
                self._systemd.reloading()
                await roll(self._slots, self._start, self._clock, self._take_over_seconds)
                self._systemd.ready(self._describe())
        finally:
            self._rolling = False

    async def reload(self) -> None:
        """Forward a reload to every worker; tell systemd ready once all have reloaded."""
        if self._turn.locked():
            log.info(
                "a reload or an upgrade of the workers is under way; this reload follows once "
                "it ends"
            )
        async with self._turn:
            await self._reload()

    async def _reload(self) -> None:
        log.info("forwarding the reload to %d workers", len(self._slots))
        self._systemd.reloading()
        waiting = []
        for slot in self._slots:
            process = slot.process
            if process is None or process.returncode is not None or not slot.ready:
                continue  # a worker starting now reads the file as it is anyway
            slot.readied.clear()
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGHUP)
                waiting.append(slot.readied.wait())
        try:
            async with asyncio.timeout(RELOAD_TIMEOUT):
                await asyncio.gather(*waiting)
        except TimeoutError:
            log.warning("not every worker finished its reload within %.0f s", RELOAD_TIMEOUT)
        self._systemd.ready(self._describe())
