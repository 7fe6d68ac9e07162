"""The browsers and the application server of the handoff tests, in the test's process.

A :class:`Watcher` is one browser subscribed to ``K`` that keeps every
message id it receives and how its connection ended; a :class:`Poster` is an
application server posting ``RATE`` messages a second to an admin port
(``post_over`` posts once over a connection opened earlier, ``pooled_connection``);
:func:`read_status` reads a node's ``/status/``. :class:`StandIn` takes the
place of the other side's pid watcher when both sides of a handoff run in
the test's process (whose pid they would otherwise watch, and kill).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from relay.node.handoff import HandoffPoint
from relay.node.node import Node
from tests.support import WAIT, notification

#: Posts per second during a handoff.
RATE = 50


class Watcher:
    """One browser: every message it receives, and whether its connection ever ended."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        """Start reading ``ws`` (open, subscribed)."""
        self.ws = ws
        self.ids: list[str] = []
        self.ended: BaseException | None = None
        #: When the last message came (``time.monotonic()``): a reconnect replays from there.
        self.last_heard = time.monotonic()
        self._pong = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, port: int, *, compression: str | None = None, sock: socket.socket | None = None
    ) -> Watcher:
        """Connect (over ``sock`` if given, already connected), subscribe to ``K``, sync."""
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/", ping_interval=None, compression=compression, sock=sock
        )
        await ws.send(orjson.dumps({"command": "subscribe", "data": ["K"]}).decode())
        watcher = cls(ws)
        await watcher.sync()
        return watcher

    async def replay(self, since: float) -> None:
        """Ask for what was posted since ``since`` (``time.monotonic()``), as a reconnect does."""
        age = (time.monotonic() - since) * 1000.0 + 1000.0  # a second more: never too short
        await self.ws.send(orjson.dumps({"command": "replay", "data": {"age": age}}).decode())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = orjson.loads(raw)
                if message == {"type": "pong"}:
                    self._pong.set()
                else:
                    self.ids.append(message["uniqueID"])
                    self.last_heard = time.monotonic()
        except websockets.ConnectionClosed as exc:
            self.ended = exc
        else:
            self.ended = ConnectionError("closed cleanly")

    async def sync(self) -> None:
        """A ping barrier: everything sent before it has been read."""
        self._pong.clear()
        await self.ws.send(orjson.dumps({"command": "ping"}).decode())
        async with asyncio.timeout(WAIT):
            await self._pong.wait()


class Poster:
    """An application server posting ``RATE`` messages a second, each on a new connection."""

    def __init__(self, port: int) -> None:
        """Start posting to the admin ``port`` on 127.0.0.1."""
        self.url = f"http://127.0.0.1:{port}/"
        self.posted: list[str] = []
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while not self._stop.is_set():
                unique = f"m{len(self.posted) + len(self.failures)}"
                try:
                    body = orjson.dumps(notification("K", unique_id=unique))
                    async with session.post(self.url, data=body) as response:
                        ok = response.status == 200
                        await response.read()
                except aiohttp.ClientError as exc:
                    ok = False
                    unique += f" ({exc})"
                (self.posted if ok else self.failures).append(unique)
                await asyncio.sleep(1 / RATE)  # the pace of the posts, not a wait for anything

    async def stop(self) -> None:
        """Stop posting, once the post under way is answered."""
        self._stop.set()
        await self.task


def post_over(sock: socket.socket, unique_id: str) -> int:
    """POST a notification to ``K`` over ``sock`` (connected to an admin port); its status.

    Blocking (run it in a thread): an application server that opened its
    connection earlier and uses it only now.
    """
    body = orjson.dumps(notification("K", unique_id=unique_id))
    head = f"POST / HTTP/1.1\r\nHost: relay\r\nContent-Length: {len(body)}\r\n"
    sock.settimeout(WAIT)
    sock.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return int(answer.split(b" ", 2)[1]) if answer else 0


async def pooled_connection(port: int) -> socket.socket:
    """An application server's connection to the admin ``port``, opened now and used later.

    Returned once the node has accepted it: a request on a connection opened
    after it has been answered.
    """
    pooled = socket.create_connection(("127.0.0.1", port))
    await read_status(port)
    return pooled


@contextlib.asynccontextmanager
async def handoff_point(
    old: Node, tmp_path: Path, on_done: Callable[[], None] = lambda: None
) -> AsyncIterator[tuple[HandoffPoint, str]]:
    """``old`` waiting for a successor at a socket in ``tmp_path``: the point and its path."""
    path = str(tmp_path / "handoff.sock")
    point = HandoffPoint(old, path, on_done=on_done)
    point.start()
    try:
        yield point, path
    finally:
        point.close()


async def connect_many(port: int, count: int, **kwargs: Any) -> list[Watcher]:
    """``count`` watchers on ``port``, opened a hundred at a time."""
    watchers: list[Watcher] = []
    for start in range(0, count, 100):
        group = range(start, min(count, start + 100))
        watchers += await asyncio.gather(*(Watcher.open(port, **kwargs) for _ in group))
    return watchers


async def close_all(watchers: list[Watcher]) -> None:
    """Close every watcher's connection and wait for its reader to end."""
    await asyncio.gather(*(watcher.ws.close() for watcher in watchers))
    await asyncio.gather(*(watcher.task for watcher in watchers))


class StandIn:
    """Stands in for ``WatchedProcess``: a process that runs until "killed"."""

    def __init__(self, pid: int, by: str) -> None:
        """Watch (pretend to watch) ``pid`` for the module named ``by``."""
        self.pid = pid
        self.by = by
        self.killed = False

    async def exited(self, within: float) -> bool:
        """Whether it was "killed"; no wait (it is this process, which runs)."""
        return self.killed

    def kill(self) -> bool:
        """Record the kill instead of sending it."""
        self.killed = True
        return True

    def close(self) -> None:
        """Nothing to close."""


def stand_ins(monkeypatch: pytest.MonkeyPatch, *modules: ModuleType) -> list[StandIn]:
    """Make ``modules`` watch processes with stand-ins; return each one made, in order."""
    made: list[StandIn] = []

    def watcher(by: str) -> Callable[[int], StandIn]:
        def watch(pid: int) -> StandIn:
            made.append(StandIn(pid, by))
            return made[-1]

        return watch

    for module in modules:
        # raising=False: a module that watches no process yet (before a fix) still runs.
        monkeypatch.setattr(module, "WatchedProcess", watcher(module.__name__), raising=False)
    return made


async def read_status(port: int) -> dict[str, Any]:
    """The ``/status/`` document of the admin ``port`` on 127.0.0.1."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/status/") as response,
    ):
        document: dict[str, Any] = await response.json()
    return document
