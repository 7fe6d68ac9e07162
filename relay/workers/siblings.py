"""How a worker answers for the whole node: it asks its siblings over private unix sockets.

Each worker serves its own figures on ``worker-<index>.sock`` in the
supervisor's run directory (mode 0700, so only relay's user reaches it).
When ``/status/`` or ``/metrics`` reaches a worker, it asks every sibling at
once, briefly, and adds the answers up with its own (``totals.py``). A
sibling that does not answer in time (restarting, say) is left out and shown
as such in the ``workers`` section, so the node's figures never wait on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.workers.plan import WorkerRole
from relay.workers.totals import node_metrics, node_status

log = logging.getLogger("relay.workers")

#: How long a worker waits for a sibling's figures before leaving them out.
SIBLING_TIMEOUT = 1.0

_JSON = "application/json"


class Siblings:
    """This worker's private socket for its siblings, and the node figures it assembles."""

    def __init__(
        self,
        role: WorkerRole,
        *,
        local_status: Callable[[str], dict[str, Any]],
        local_metrics: Callable[[], bytes],
        connections: Callable[[], int],
        fingerprint: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Serve and gather figures for ``role``; the callables read this worker's own."""
        self.role = role
        self._local_status = local_status
        self._local_metrics = local_metrics
        self._connections = connections
        self._fingerprint = fingerprint
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._sessions: dict[int, aiohttp.ClientSession] = {}
        self._restarts = _restart_counter(role.generation)

    async def start(self) -> None:
        """Answer siblings on this worker's private socket."""
        app = web.Application()
        app.router.add_get("/status/", self._serve_status)
        app.router.add_get("/metrics", self._serve_metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
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

    def describe(self) -> dict[str, Any]:
        """This worker, as the ``workers`` section lists it."""
        return {
            "index": self.role.index,
            "pid": os.getpid(),
            "restarts": self.role.generation,
            "fingerprint": self._fingerprint,
            "connections": self._connections(),
            "state": "serving",
        }

    async def status(self, instance: str) -> dict[str, Any]:
        """The node's ``/status/`` for ``instance``: this worker's figures and its siblings'."""
        own = self._local_status(instance)
        replies = await self._ask_all(f"/status/?{urlencode({'instance': instance})}")
        statuses = [own]
        workers = []
        for index in range(self.role.plan.count):
            if index == self.role.index:
                workers.append(self.describe())
                continue
            reply = replies.get(index)
            if reply is None:
                workers.append({"index": index, "state": "not answering"})
                continue
            answer = orjson.loads(reply)
            statuses.append(answer["status"])
            workers.append(answer["worker"])
        return node_status(statuses, uptime_ms=self._uptime_ms(), workers=workers)

    async def metrics(self) -> bytes:
        """The node's Prometheus exposition: every answering worker's metrics added up."""
        replies = await self._ask_all("/metrics")
        texts = [self._own_metrics().decode(), *(r.decode() for r in replies.values())]
        answering = GaugeMetricFamily(
            "relay_workers_answering",
            "Worker processes that answered for this scrape (the rest are restarting).",
            value=len(texts),
        )
        configured = GaugeMetricFamily(
            "relay_workers", "Worker processes the node runs.", value=self.role.plan.count
        )
        extra: list[Metric] = [configured, answering]
        return node_metrics(texts, extra)

    def _uptime_ms(self) -> int:
        return int((self._clock() - self.role.plan.started) * 1000)

    async def _ask_all(self, path: str) -> dict[int, bytes]:
        """Ask every sibling for ``path`` at once; returns the answers that came in time."""
        others = [i for i in range(self.role.plan.count) if i != self.role.index]
        answers = await asyncio.gather(*(self._ask(index, path) for index in others))
        return {index: body for index, body in zip(others, answers, strict=True) if body}

    async def _ask(self, index: int, path: str) -> bytes | None:
        session = self._sessions.get(index)
        if session is None or session.closed:
            connector = aiohttp.UnixConnector(path=str(self.role.socket_path(index)))
            session = self._sessions[index] = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=SIBLING_TIMEOUT)
            )
        try:
            async with session.get(f"http://worker{path}") as reply:
                if reply.status != 200:
                    return None
                return await reply.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("worker %d did not answer %s: %s", index, path, exc)
            return None

    async def _serve_status(self, request: web.Request) -> web.Response:
        instance = request.query.get("instance", "")
        body = {"worker": self.describe(), "status": self._local_status(instance)}
        return web.Response(body=orjson.dumps(body), content_type=_JSON)

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._own_metrics(), content_type="text/plain")

    def _own_metrics(self) -> bytes:
        """This worker's exposition, with its slot's restart count (they add up per node)."""
        return self._local_metrics() + self._restarts


def _restart_counter(generation: int) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    restarts = CounterMetricFamily(
        "relay_worker_restarts",
        "Times the supervisor restarted a worker that had died.",
        value=generation,
    )
    registry.register(_One(restarts))
    return generate_latest(registry)


class _One(Collector):
    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> Iterable[Metric]:
        yield self._family
