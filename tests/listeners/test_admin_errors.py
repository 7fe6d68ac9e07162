"""Garbage on the admin port, as a real node and its log see it: JSON refusals, no tracebacks."""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from relay.node.node import Node
from tests.support import (
    WAIT,
    Browser,
    RelayProcess,
    eventually,
    local_config,
    notification,
)

#: Something a client may put in a header that must never reach the log.
SECRET = b"not-for-the-log-"

#: Log lines above WARNING, or any sign of a traceback.
TROUBLE = re.compile(r" (ERROR|CRITICAL) |Traceback")


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one raw request; return the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            piece = sock.recv(65536)
            assert piece, f"the node closed without answering: {answer!r}"
            answer += piece
        head, body = answer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = int(headers.get("Content-Length", "0"))
        while len(body) < length:
            piece = sock.recv(65536)
            assert piece, "the node closed in the middle of its answer"
            body += piece
    return int(lines[0].split()[1]), headers, body


def post(body: bytes, *headers: str) -> bytes:
    extra = "".join(f"{header}\r\n" for header in headers)
    return (
        f"POST / HTTP/1.1\r\nHost: relay\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


def nested(depth: int) -> bytes:
    """A notification whose ``data`` nests arrays ``depth`` levels deep."""
    return b'{"subscribers":["PHID-A"],"data":' + b"[" * depth + b"]" * depth + b"}"


#: What an application, a script or a scanner may send, and what relay must answer.
REFUSED = [
    ("nesting 254 levels", post(nested(254)), 400, "more than 128 deep"),
    ("nesting 1,023 levels", post(nested(1023)), 400, "more than 128 deep"),
    ("nesting past orjson's parser", post(nested(1100)), 400, "not valid JSON"),
    (
        "gzip that is not gzip",
        post(b'{"subscribers":["PHID-A"]}', "Content-Encoding: gzip"),
        400,
        "cannot be read",
    ),
    (
        "deflate that is not deflate",
        post(b"not deflate at all", "Content-Encoding: deflate"),
        400,
        "cannot be read",
    ),
    ("no subscribers", post(b'{"type":"workboards"}'), 400, '"subscribers" is missing'),
    ("wrong method", b"PUT / HTTP/1.1\r\nHost: relay\r\nContent-Length: 0\r\n\r\n", 405, "PUT"),
    ("unknown path", b"GET /nope HTTP/1.1\r\nHost: relay\r\n\r\n", 404, "/nope"),
    (
        "a body over the limit",
        b"POST / HTTP/1.1\r\nHost: relay\r\nContent-Length: 99999999\r\n\r\n",
        413,
        "limit",
    ),
]


@pytest.mark.slow
def test_garbage_bodies_get_json_errors_and_leave_no_trace_above_warning(tmp_path: Path) -> None:
    config = tmp_path / "relay.json"
    config.write_bytes(orjson.dumps(local_config()))
    node = RelayProcess(config, ["--debug"]).start()
    lines = node.follow_log()
    try:
        port = node.admin_ports[0]
        for what, request, status, reason in REFUSED:
            got, headers, body = exchange(port, request)
            assert got == status, (what, body)
            assert headers["Content-Type"].startswith("application/json"), (what, headers)
            assert reason in orjson.loads(body)["error"], (what, body)

        # Not well-formed HTTP at all: aiohttp refuses it before relay sees it,
        # and the log names the fault without quoting what the client sent.
        for request in (
            b"POST / HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nHost: relay\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nAuthorization: Bearer " + SECRET * 1000 + b"\r\n\r\n",
        ):
            assert exchange(port, request)[0] == 400

        # Clients that give up in the middle of a body, announced or chunked.
        for head in (b"Content-Length: 1000", b"Transfer-Encoding: chunked"):
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
                sock.sendall(b"POST / HTTP/1.1\r\nHost: relay\r\n" + head + b"\r\n\r\n")
                sock.sendall(b'1a\r\n{"subscribers":["PHID-A"]' if b"chunked" in head else b"{")
        gone = "went away in the middle of a POST body"

        def both_noticed() -> bool:
            return sum(gone in line for _, line in list(lines)) == 2

        deadline = time.monotonic() + WAIT
        while not both_noticed():
            assert time.monotonic() < deadline, "the node never noticed the clients leaving"
            time.sleep(0.01)

        # And the node still serves: a proper post reaches a browser.
        assert asyncio.run(deliver_one(node)) == ["PHID-A"]
    finally:
        node.signal(signal.SIGTERM)
        status, output = node.wait()
    assert status == 0
    trouble = [line for line in output.splitlines() if TROUBLE.search(line)]
    assert trouble == [], "\n".join(trouble)
    assert all(" DEBUG " in line for line in output.splitlines() if gone in line)
    assert SECRET.decode() not in output
    malformed = [line for line in output.splitlines() if "refused a malformed request" in line]
    assert len(malformed) == 3
    assert all(" WARNING " in line for line in malformed)


async def deliver_one(node: RelayProcess) -> list[Any]:
    browser = await Browser.open(node.client_ports[0])
    await browser.subscribe("PHID-A")
    request = post(gzip.compress(orjson.dumps(notification("PHID-A"))), "Content-Encoding: gzip")
    status, _, _ = await asyncio.to_thread(exchange, node.admin_ports[0], request)
    assert status == 200
    received = await browser.drain()
    await browser.close()
    return [message["subscribers"][0] for message in received]


# The same paths in-process, where the log is read through caplog.


async def test_a_client_leaving_mid_body_is_a_debug_line_only(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="relay")
    _, writer = await asyncio.open_connection("127.0.0.1", node.admin_addresses[0][1])
    writer.write(b"POST / HTTP/1.1\r\nHost: relay\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    async def noticed() -> bool:
        return "went away in the middle of a POST body" in caplog.text

    await eventually(noticed, "the node noticed the client leaving")
    assert [r.levelname for r in caplog.records if "went away" in r.getMessage()] == ["DEBUG"]
    assert not [r for r in caplog.records if r.levelno > logging.WARNING or r.exc_info]


@pytest.mark.parametrize(
    ("request_bytes", "fault"),
    [
        (
            b"POST / HTTP/1.1\r\nAuthorization: Bearer " + SECRET * 1000 + b"\r\n\r\n",
            "Got more than 8190 bytes when reading",
        ),
        # aiohttp quotes a request target as bytearray(b'...'), not b'...'.
        (
            b"GET /status/?token=" + SECRET * 1000 + b" HTTP/1.1\r\nHost: relay\r\n\r\n",
            "Got more than 8190 bytes when reading",
        ),
        # ...and an absolute target it cannot read is the whole message, unquoted.
        (
            b"GET http://user:" + SECRET + b"@/status/ HTTP/1.1\r\nHost: relay\r\n\r\n",
            "the request target is not a valid URL",
        ),
        (
            b"GET http://[::1/status/?token=" + SECRET + b" HTTP/1.1\r\nHost: relay\r\n\r\n",
            "the request target is not a valid URL",
        ),
    ],
    ids=["header", "target", "credentials", "broken host"],
)
async def test_malformed_http_is_one_warning_without_the_clients_bytes(
    node: Node, caplog: pytest.LogCaptureFixture, request_bytes: bytes, fault: str
) -> None:
    status, _, _ = await asyncio.to_thread(exchange, node.admin_addresses[0][1], request_bytes)
    assert status == 400
    [record] = [r for r in caplog.records if r.name == "relay.admin.http"]
    assert record.levelname == "WARNING"
    assert record.exc_info is None
    assert record.getMessage() == f"refused a malformed request from 127.0.0.1: {fault}"
    assert SECRET.decode() not in caplog.text


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST / HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nHost: relay\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST / HTTP/1.1\r\nAuthorization: Bearer " + SECRET + b"\x01\r\n\r\n",
        b"GET http://user:" + SECRET + b"@/status/ HTTP/1.1\r\nHost: relay\r\n\r\n",
    ],
    ids=["chunk size", "two lengths", "control character", "target"],
)
async def test_a_request_aiohttp_cannot_parse_gets_a_json_400_without_its_bytes(
    node: Node, request_bytes: bytes
) -> None:
    """Refused by aiohttp itself, which answers in plain text quoting the request back."""
    status, headers, body = await asyncio.to_thread(
        exchange, node.admin_addresses[0][1], request_bytes
    )
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Connection"] == "close"
    error = orjson.loads(body)["error"]
    assert error
    assert SECRET.decode() not in error


async def test_a_disabled_status_page_is_a_json_404(
    start_node: Callable[..., Awaitable[Node]], session: aiohttp.ClientSession
) -> None:
    node = await start_node(local_config(dashboard={"enabled": False}))
    url = f"http://127.0.0.1:{node.admin_addresses[0][1]}/dashboard/"
    async with session.get(url) as response:
        assert response.status == 404
        assert await response.json() == {"error": "the status page is disabled on this node"}


async def test_a_small_gzip_body_that_inflates_past_the_limit_gets_a_json_413(
    start_node: Callable[..., Awaitable[Node]],
) -> None:
    node = await start_node(local_config(limits={"admin_body_bytes": 64 * 1024}))
    bomb = gzip.compress(b'{"subscribers":["A"],"pad":"' + b"0" * 200_000 + b'"}')
    assert len(bomb) < 1024  # arrives whole, with its headers
    request = post(bomb, "Content-Encoding: gzip")
    status, _, body = await asyncio.to_thread(exchange, node.admin_addresses[0][1], request)
    assert status == 413
    assert orjson.loads(body) == {"error": "request body exceeds the 65536-byte limit"}
