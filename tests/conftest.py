"""Fixtures shared by every test: in-process nodes and relay processes on port 0, real clients."""

from __future__ import annotations

import asyncio
import re
import resource
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web

from relay.config import parse_config
from relay.node.node import Node
from tests.chromium import Chromium
from tests.cluster_status.webhook import Receiver, serve
from tests.harness import Relays
from tests.redis_harness import RedisServer
from tests.support import Admin, Browser, local_config

# Fan-out tests open a thousand sockets each side; allow what the system allows.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))

StartNode = Callable[..., Awaitable[Node]]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run the in-process scenarios on asyncio's own loop and on uvloop, which production uses.

    Tests marked ``slow`` drive relay processes (which pick their own loop), so
    running their client side twice would only cost time.
    """
    if item.get_closest_marker("slow"):
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
async def start_node() -> AsyncIterator[StartNode]:
    """Start in-process nodes (default: one client and one admin on loopback, port 0)."""
    nodes: list[Node] = []

    async def start(config: dict[str, Any] | None = None, **kwargs: Any) -> Node:
        node = Node(parse_config(config or local_config()), **kwargs)
        await node.start()
        nodes.append(node)
        return node

    yield start
    for node in reversed(nodes):
        await node.stop()


@pytest.fixture
async def node(start_node: StartNode) -> Node:
    """One running node with the default test config."""
    return await start_node()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, on its own port and in its own directory."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[Relays]:
    """Clusters of relay processes (tests/harness); every node is stopped at the end."""
    harness = Relays(tmp_path / "relays")
    yield harness
    harness.stop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that ran relay nodes shows the end of their logs in its report.

    A failure made of unraisable exceptions (objects whose finaliser warned,
    found by a garbage collection, perhaps of an earlier test's objects)
    names what they were in its one-line summary, which a CI excerpt keeps
    when it cuts the tracebacks.
    """
    report: pytest.TestReport = yield
    harness = getattr(item, "funcargs", {}).get("relays")
    if report.failed and isinstance(harness, Relays) and harness.nodes:
        report.sections.append(("relay logs", harness.report()))
    crash = getattr(report.longrepr, "reprcrash", None)
    if report.failed and call.excinfo is not None and crash is not None:
        summary = unraisable_summary(call.excinfo.value)
        if summary:
            crash.message += f": {summary}"
    return report


def unraisable_summary(exc: BaseException) -> str | None:
    """What a group of unraisable-exception warnings held, counted by kind (None: no such group).

    Addresses and numbers are blanked so that twenty unclosed sockets count as one kind.
    """
    if not isinstance(exc, BaseExceptionGroup) or not all(
        isinstance(sub, pytest.PytestUnraisableExceptionWarning) for sub in exc.exceptions
    ):
        return None
    kinds: Counter[str] = Counter()
    for sub in exc.exceptions:
        ignored_in = (str(sub).splitlines() or ["?"])[0]
        cause = sub.__cause__
        what = f"{ignored_in} <- {type(cause).__name__}: {cause}" if cause else ignored_in
        kinds[re.sub(r"0x[0-9a-fA-F]+|\d+", "N", what)[:200]] += 1
    return "; ".join(f"{count} x {what}" for what, count in kinds.most_common(3))


@pytest.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[Chromium]:
    """Headless Chromium, closed at the end of the test."""
    browser = await Chromium.launch(tmp_path / "chromium-profile")
    yield browser
    await browser.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def admin(node: Node, session: aiohttp.ClientSession) -> Admin:
    """An application server talking to ``node``'s admin port."""
    return Admin(session, node.admin_addresses[0][1])


@pytest.fixture
async def open_browser(node: Node) -> AsyncIterator[Callable[..., Awaitable[Browser]]]:
    """Open browsers on ``node``'s client port; all are closed at the end."""
    browsers: list[Browser] = []

    async def open_(path: str = "/", **kwargs: Any) -> Browser:
        browser = await Browser.open(node.client_addresses[0][1], path, **kwargs)
        browsers.append(browser)
        return browser

    yield open_
    for browser in browsers:
        await browser.close()


@pytest.fixture
async def webhooks() -> AsyncIterator[list[web.AppRunner]]:
    """The webhook servers a test starts; all are stopped at its end."""
    runners: list[web.AppRunner] = []
    yield runners
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def receiver(webhooks: list[web.AppRunner]) -> Receiver:
    """A webhook that answers 204 to every alert and keeps it."""
    return await serve(Receiver(), webhooks)
