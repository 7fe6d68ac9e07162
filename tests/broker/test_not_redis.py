"""Something other than Redis at the broker's address: the log says what it is, not a parse error.

Real servers on port 0: an aiohttp HTTP server, a TLS server, one that closes
every connection at once, and a plain Redis behind a ``rediss://`` URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from relay.node.node import Node
from tests.redis_harness import RedisServer
from tests.support import eventually, local_config

StartNode = Callable[..., Awaitable[Node]]

#: One quick attempt: the reason is what matters here, not the retries.
QUICK = {"connect_timeout_seconds": 1.0, "timeout_seconds": 1.0, "backoff_max_seconds": 0.5}


@contextlib.asynccontextmanager
async def http_server() -> AsyncIterator[int]:
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def stream_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[int]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def close_at_once(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def read_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        await reader.read(100)
    writer.close()


async def reason_logged(
    start_node: StartNode, caplog: pytest.LogCaptureFixture, url: str, **broker: Any
) -> str:
    """Start a node on ``url``; return the reason of its "broker ... is down" line."""
    caplog.set_level(logging.WARNING, logger="relay.broker")
    node = await start_node(local_config(broker={"url": url, **QUICK, **broker}))
    assert node.broker is not None

    async def logged() -> bool:
        return any(" is down: " in m for m in caplog.messages)

    await eventually(logged, "the broker logged why it is down")
    line = next(m for m in caplog.messages if " is down: " in m)
    reason = line.split(" is down: ", 1)[1].split("; delivering locally", 1)[0]
    assert node.broker.last_error == reason
    return reason


async def test_an_http_server_is_named(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    async with http_server() as port:
        reason = await reason_logged(start_node, caplog, f"redis://127.0.0.1:{port}/0")
    assert reason.startswith('not Redis: an HTTP server ("HTTP/1.')
    assert "Protocol error" not in reason


async def test_a_tls_server_is_named_and_rediss_suggested(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    async with stream_server(read_then_close, tls=context) as port:
        reason = await reason_logged(start_node, caplog, f"redis://127.0.0.1:{port}/0")
    assert reason == (
        "a TLS server answers there, not plain Redis: if it is Redis with TLS, "
        "the URL should start with rediss://"
    )


async def test_a_server_that_closes_at_once_is_named(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    async with stream_server(close_at_once) as port:
        reason = await reason_logged(start_node, caplog, f"redis://127.0.0.1:{port}/0")
    assert reason == (
        "not Redis: a server that closes every connection at once without a word "
        "is listening at that address"
    )


async def test_a_plain_redis_behind_a_rediss_url_is_named(
    start_node: StartNode, caplog: pytest.LogCaptureFixture, redis_server: RedisServer
) -> None:
    url = redis_server.url.replace("redis://", "rediss://")
    reason = await reason_logged(start_node, caplog, url, tls_verify=False)
    assert reason == "Redis answers there without TLS: the URL should start with redis://"


async def test_nothing_listening_keeps_the_clients_own_reason(
    start_node: StartNode, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    async with stream_server(close_at_once) as port:
        pass  # bound, then closed: nothing listens on that port now
    reason = await reason_logged(start_node, caplog, f"redis://127.0.0.1:{port}/0")
    assert reason.startswith("ConnectionError: Error 111 connecting to 127.0.0.1:")


async def test_sentinels_that_cannot_be_reached_are_named_in_one_short_line(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    ports = []
    for _ in range(2):
        async with stream_server(close_at_once) as port:
            ports.append(port)  # bound, then closed: nothing listens there now
    sentinels = [{"host": "127.0.0.1", "port": port} for port in ports]
    reason = await reason_logged(start_node, caplog, "redis://relayMaster/0", sentinels=sentinels)
    # redis-py's own message puts a repr of each Sentinel's whole client (kilobytes)
    # before its error: the log line, /status/ and check-config keep only the errors.
    assert "<redis" not in reason
    assert len(reason) < 300
    assert reason.startswith("MasterNotFoundError: No master found for 'relayMaster': ")
    for port in ports:
        assert f"Error 111 connecting to 127.0.0.1:{port}." in reason
