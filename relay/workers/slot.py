"""One worker position of a ``--workers`` node, as the supervisor keeps it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from relay.links.backoff import RetryDelays


class WorkerProcess(Protocol):
    """A worker process as the supervisor handles it: ``asyncio.subprocess.Process`` or forked."""

    @property
    def pid(self) -> int:
        """Its process id."""

    @property
    def returncode(self) -> int | None:
        """Its exit status once it has ended and been reaped (negative: killed by that signal)."""

    async def wait(self) -> int:
        """Wait until it ends; its exit status."""

    def send_signal(self, number: int) -> None:
        """Signal it; ProcessLookupError if it is gone."""

    def kill(self) -> None:
        """SIGKILL it."""


@dataclass
class Slot:
    """One worker position: the process in it now, and its history."""

    index: int
    backoff: RetryDelays
    process: WorkerProcess | None = None
    #: Times this slot's worker was restarted.
    generation: int = 0
    ready: bool = False
    started_at: float = 0.0
    last_ping: float = 0.0
    #: Set at each READY=1: start-up, the end of a reload, or a successor that took over.
    readied: asyncio.Event = field(default_factory=asyncio.Event)
    #: The pid the last ``MAINPID=`` named: a successor says it with its READY=1.
    main_pid: int | None = None
    #: Set while the worker is being replaced; done once the slot's process is settled.
    rolling: asyncio.Future[None] | None = None
    #: The new code taking this slot's worker over, until it is adopted or stopped.
    successor: WorkerProcess | None = None
