"""How a worker answers for the whole node: it asks its siblings over private unix sockets.

Each worker serves its own reading (``relay.core.worker_reading``) as a
record (``relay.links.worker_wire``) on ``worker-<index>.sock`` in the
supervisor's run directory (mode 0700, so only relay's user reaches it).
When ``/status/``, ``/metrics`` or the status page needs the node's figures,
the worker asks every sibling at once, briefly, and adds the readings up
with its own (``relay.core.add_up``). A sibling that does not answer in time
(restarting, say) is listed as "not answering", one whose record cannot be
read as "unreadable", and both are left out of the sums: the node's figures
never wait on them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web

from relay import __version__
from relay.core.add_up import add_up
from relay.core.latency_slots import LatencySlot
from relay.core.snapshot import NodeSnapshot
from relay.core.worker_reading import (
    NOT_ANSWERING,
    SERVING,
    UNREADABLE,
    LatencyReading,
    NodeView,
    WorkerReading,
    WorkerSlot,
)
from relay.links.worker_wire import decode, encode
from relay.workers.plan import WorkerRole

log = logging.getLogger("relay.workers")

#: How long a worker waits for a sibling's reading before leaving it out.
SIBLING_TIMEOUT = 1.0
#: Where a worker serves its reading on its private socket.
READING_PATH = "/reading"


class Siblings:
    """This worker's private socket for its siblings, and the node's view it assembles."""

    def __init__(
        self,
        role: WorkerRole,
        *,
        snapshot: Callable[[], NodeSnapshot],
        latency: Callable[[], LatencyReading],
        recent: Callable[[], tuple[LatencySlot, ...]] = tuple,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Serve and gather readings for ``role``; the callables read this worker's own."""
        self.role = role
        self._snapshot = snapshot
        self._latency = latency
        self._recent = recent
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    async def start(self) -> None:
        """Answer siblings on this worker's private socket."""
        app = web.Application()
        app.router.add_get(READING_PATH, self._serve_reading)
        # A reading takes microseconds to answer: a stop waits that long for one
        # in progress, not aiohttp's 60 s (a --workers supervisor kills at 10).
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SIBLING_TIMEOUT
        )
        await runner.setup()
        path = self.role.socket_path(self.role.index)
        path.unlink(missing_ok=True)  # left by this slot's previous worker, if it died
        await web.UnixSite(runner, str(path)).start()
        self._runner = runner

    async def stop(self) -> None:
        """Stop answering and close the connections to siblings."""
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def reading(self) -> WorkerReading:
        """This worker's own reading, as its siblings receive it."""
        role = self.role
        return WorkerReading(
            index=role.index,
            pid=os.getpid(),
            restarts=role.generation,
            snapshot=self._snapshot(),
            latency=self._latency(),
            recent=self._recent(),
            version=__version__,
        )

    async def view(self) -> NodeView:
        """The node's figures: this worker's reading and its siblings', added up."""
        own = self.reading()
        others = [i for i in range(self.role.plan.count) if i != self.role.index]
        found = await asyncio.gather(*(self._ask(index) for index in others))
        slots = dict(zip(others, found, strict=True))
        slots[own.index] = WorkerSlot(own.index, SERVING, own)
        return add_up([slots[i] for i in sorted(slots)], own=own, uptime_ms=self.uptime_ms())

    def uptime_ms(self) -> int:
        """The node's uptime: since its supervisor started."""
        return int((self._clock() - self.role.plan.started) * 1000)

    async def _ask(self, index: int) -> WorkerSlot:
        """Sibling ``index``'s reading, or why there is none."""
        raw = await self._fetch(index)
        if raw is None:
            return WorkerSlot(index, NOT_ANSWERING)
        try:
            reading = decode(raw)
        except ValueError as exc:
            log.warning("worker %d sent a reading that cannot be read: %s", index, exc)
            return WorkerSlot(index, UNREADABLE)
        if reading.index != index:
            log.warning("worker %d answered as worker %d", index, reading.index)
            return WorkerSlot(index, UNREADABLE)
        return WorkerSlot(index, SERVING, reading)

    async def _fetch(self, index: int) -> bytes | None:
        session = self._sessions.get(index)
        if session is None or session.closed:
            connector = aiohttp.UnixConnector(path=str(self.role.socket_path(index)))
            session = self._sessions[index] = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=SIBLING_TIMEOUT)
            )
        try:
            async with session.get(f"http://worker{READING_PATH}") as reply:
                if reply.status != 200:
                    return None
                return await reply.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("worker %d did not answer: %s", index, exc)
            return None

    async def _serve_reading(self, request: web.Request) -> web.Response:
        return web.Response(body=encode(self.reading()), content_type="application/json")
