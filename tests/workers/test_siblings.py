"""A worker's view of its siblings over real unix sockets: silent, unreadable, or serving."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from relay.core.snapshot import InstanceReading, NodeSnapshot
from relay.core.worker_reading import LatencyReading
from relay.links.worker_wire import encode
from relay.workers.plan import NodePlan, WorkerRole
from relay.workers.siblings import READING_PATH, SIBLING_TIMEOUT, Siblings

Handler = Callable[[web.Request], Awaitable[web.Response]]


def snapshot(connections: int) -> NodeSnapshot:
    instances = {"default": InstanceReading(connections, connections, 3, 3 * connections)}
    return NodeSnapshot("F", 10, connections, {}, 0, instances, (), None)


def worker(directory: Path, index: int, connections: int) -> Siblings:
    plan = NodePlan(count=4, ports=(), started=time.monotonic())
    return Siblings(
        WorkerRole(directory, index, 0, plan),
        snapshot=lambda: snapshot(connections),
        latency=LatencyReading,
    )


async def serve_on(path: Path, handler: Handler) -> web.AppRunner:
    app = web.Application()
    app.router.add_get(READING_PATH, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, str(path)).start()
    return runner


async def test_each_sibling_is_serving_not_answering_or_unreadable(tmp_path: Path) -> None:
    me, serving = worker(tmp_path, 0, 2), worker(tmp_path, 1, 3)
    await me.start()
    await serving.start()
    released = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await released.wait()
        return web.Response()

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(body=b'{"v": 1, "index": 3, "pid": "x"}')

    runners = [
        await serve_on(me.role.socket_path(2), hang),
        await serve_on(me.role.socket_path(3), garbage),
    ]
    try:
        started = time.monotonic()
        view = await me.view()
        # The silent sibling costs the answer at most the timeout.
        assert time.monotonic() - started < SIBLING_TIMEOUT + 1.0
        assert [slot.entry()["state"] for slot in view.workers] == [
            "serving",
            "serving",
            "not answering",
            "unreadable",
        ]
        assert view.answering == 2
        status = view.status("default")
        assert status["clients.active"] == 5
        assert status["messages.out"] == 15
        assert status["messages.in"] == 3
        assert status["workers"][1]["connections"] == 3
    finally:
        released.set()
        for runner in runners:
            await runner.cleanup()
        await serving.stop()
        await me.stop()


async def test_a_sibling_s_record_is_its_typed_reading(tmp_path: Path) -> None:
    sibling = worker(tmp_path, 1, 4)
    await sibling.start()
    try:
        connector = aiohttp.UnixConnector(path=str(sibling.role.socket_path(1)))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"http://worker{READING_PATH}") as reply,
        ):
            assert reply.status == 200
            assert await reply.read() == encode(sibling.reading())
    finally:
        await sibling.stop()
