"""What a fuzzer found (issue 19), against a real node on real sockets: answers, not tracebacks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.core.instance_counts import MAX_COUNTED_NAME
from relay.core.instances import OVERFLOW_INSTANCE
from relay.node.node import Node
from tests.fuzz.run import METRICS_BOUND
from tests.listeners.test_admin_errors import exchange
from tests.support import WAIT, Admin, Browser, eventually, local_config, notification

StartNode = Callable[..., Awaitable[Node]]


def no_trouble(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Records above WARNING or carrying a traceback, as lines."""
    return [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno > logging.WARNING or r.exc_info
    ]


@pytest.mark.parametrize("host", [b"h:abc", b"h:1:2", b"[::1]:99999", b"[::1]x", b"\xff"])
async def test_a_malformed_host_on_the_status_page_is_a_json_400(
    node: Node, caplog: pytest.LogCaptureFixture, host: bytes
) -> None:
    request = b"GET /dashboard/ HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    status, headers, body = await asyncio.to_thread(exchange, node.admin_addresses[0][1], request)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert orjson.loads(body) == {"error": "the Host header is not a host name or a host:port"}
    assert no_trouble(caplog) == []


async def test_a_well_formed_host_still_points_the_page_at_it(node: Node) -> None:
    request = b"GET /dashboard/ HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"
    status, _, body = await asyncio.to_thread(exchange, node.admin_addresses[0][1], request)
    assert status == 200
    assert f"ws://[::1]:{node.client_addresses[0][1]}/~default/".encode() in body


async def test_a_command_nested_past_what_json_can_write_is_ignored_like_any_unknown_one(
    admin: Admin, open_browser: Callable[..., Awaitable[Browser]], caplog: pytest.LogCaptureFixture
) -> None:
    browser = await open_browser()
    await browser.subscribe("A")
    with caplog.at_level(logging.DEBUG, logger="relay.browser"):
        await browser.ws.send('{"command":' + "[" * 300 + "]" * 300 + ',"data":[]}')
        await browser.sync()  # answered: the connection is still up
    assert [r.getMessage() for r in caplog.records if "nested too deep" in r.getMessage()] == [
        "browser 127.0.0.1 sent an unusable frame, ignored: unknown command (an array nested "
        "too deep to show) (more from this browser are logged at DEBUG only)"
    ]
    assert no_trouble(caplog) == []
    await admin.post(notification("A", n=1))
    assert [m["n"] for m in await browser.drain()] == [1]


async def test_a_request_line_without_a_target_gets_a_json_400(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    status, headers, body = await asyncio.to_thread(
        exchange, node.admin_addresses[0][1], b"CONNECT \r\n\r\n"
    )
    assert status == 400
    assert headers["Connection"] == "close"
    assert orjson.loads(body) == {"error": "the request line names no target"}
    assert no_trouble(caplog) == []


def half_close_before_continue(port: int, path: bytes) -> bytes:
    """Ask for ``100 Continue``, half-close at once, and read until the node closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(
            b"POST " + path + b" HTTP/1.1\r\nHost: relay\r\nContent-Length: 30\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
        return answer


@pytest.mark.parametrize("path", [b"/", b"/nowhere"])
async def test_a_client_gone_before_100_continue_is_one_debug_line(
    node: Node, caplog: pytest.LogCaptureFixture, path: bytes
) -> None:
    caplog.set_level(logging.DEBUG, logger="relay")
    await asyncio.to_thread(half_close_before_continue, node.admin_addresses[0][1], path)
    # Which line depends on whether the node reads the half-close before it
    # writes 100 Continue (the write fails) or after (the body read does).
    gone = ("went away before its request was answered", "went away in the middle of a POST body")

    def about_it(message: str) -> bool:
        return any(words in message for words in gone)

    async def noticed() -> bool:
        return about_it(caplog.text)

    await eventually(noticed, "the node noticed the client leaving")
    assert [r.levelname for r in caplog.records if about_it(r.getMessage())] == ["DEBUG"]
    assert no_trouble(caplog) == []


def instance_labels(exposition: str) -> set[str]:
    return {
        sample.labels["instance"]
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if "instance" in sample.labels
    }


async def test_instance_names_anyone_can_post_are_counted_in_bounded_metrics(
    start_node: StartNode, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    node = await start_node(local_config(limits={"max_instances": 5}))
    admin = Admin(session, node.admin_addresses[0][1])
    await admin.post(notification("A"))
    for n in range(40):
        assert (await admin.post(notification("A"), instance=f"made-up-{n}"))[0] == 200
    browser = await Browser.open(node.client_addresses[0][1], "/~made-up-39/")
    await browser.subscribe("A")
    await admin.post(notification("A", n=1), instance="made-up-39")
    assert [m["n"] for m in await browser.drain()] == [1]  # routed all the same

    async with session.get(admin.base + "/metrics") as response:
        exposition = await response.text()
    assert instance_labels(exposition) == {"default"} | {f"made-up-{n}" for n in range(4)} | {
        OVERFLOW_INSTANCE
    }
    assert "relay_instances 5.0" in exposition
    # 36 posts, then the browser and its post: each counted under the overflow label.
    assert "relay_instances_overflow_total 38.0" in exposition
    assert len([r for r in caplog.records if "limits.max_instances (5)" in r.getMessage()]) == 1
    other = await admin.status(OVERFLOW_INSTANCE)
    assert (other["messages.in"], other["clients.active"]) == (37, 1)
    await browser.close()


async def test_metrics_stay_under_the_readme_bound_with_every_instance_slot_taken(
    node: Node, session: aiohttp.ClientSession
) -> None:
    # The worst the defaults allow: limits.max_instances names of the longest
    # length counted one by one, and one more counted under the overflow label.
    admin = Admin(session, node.admin_addresses[0][1])
    for n in range(node.config.limits.max_instances + 1):
        name = f"{n:04d}".ljust(MAX_COUNTED_NAME, "x")
        assert (await admin.post(notification("A"), instance=name))[0] == 200
    async with session.get(admin.base + "/metrics") as response:
        exposition = await response.read()
    assert len(instance_labels(exposition.decode())) == node.config.limits.max_instances + 1
    assert len(exposition) <= METRICS_BOUND


# Found by tests/fuzz: the client port.

HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (masked with a zero key, which leaves the payload as it is)."""
    assert len(payload) < 126
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


def send_and_read_to_the_end(port: int, data: bytes) -> bytes:
    """Send ``data`` in one write, half-close, and read until the node closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
        return answer


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        # Plain HTTP with a body: the 501 any plain request gets, as from Aphlict.
        (b"POST /?token=s3cret HTTP/1.1\r\nHost: relay\r\nContent-Length: 5\r\n\r\nhello", 501),
        (b"POST /?token=s3cret HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        # Not HTTP as websockets reads it.
        (b"NONSENSE /?token=s3cret\r\n\r\n", 400),
        (b"GET /?token=s3cret HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /?token=s3cret HTTP/2.0\r\n\r\n", 400),
        (b"GET /?token=s3cret HTTP/1.1\nHost: relay\n\n", 400),  # bare LF
    ],
)
async def test_a_request_websockets_cannot_read_still_gets_an_answer(
    node: Node, caplog: pytest.LogCaptureFixture, request_: bytes, status: int
) -> None:
    """The parser in websockets ends these without a word; relay answers, quoting nothing."""
    port = node.client_addresses[0][1]
    answer = await asyncio.to_thread(send_and_read_to_the_end, port, request_)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer
    assert b"s3cret" not in answer
    assert node.snapshot().rejected["bad request"] == 1
    assert no_trouble(caplog) == []
    [line] = [r.getMessage() for r in caplog.records if "(bad request)" in r.getMessage()]
    assert line.startswith("refused 1 browser connection since the last report (bad request)")
    assert "s3cret" not in line


async def test_an_unreadable_request_is_answered_once_whatever_follows(node: Node) -> None:
    def exchange() -> bytes:
        with socket.create_connection(("127.0.0.1", node.client_addresses[0][1])) as sock:
            sock.settimeout(WAIT)
            sock.sendall(b"NONSENSE\r\n")
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 400 ")
            # The node is done with this request: more of it gets no second answer.
            with contextlib.suppress(OSError):
                sock.sendall(b"Host: relay\r\n\r\nNONSENSE\r\n\r\n")
            while piece := sock.recv(65536):
                answer += piece
            return answer

    answer = await asyncio.to_thread(exchange)
    assert answer.count(b"HTTP/1.1 ") == 1
    assert node.snapshot().rejected["bad request"] == 1


async def test_a_handshake_with_two_upgrade_headers_is_refused_plainly(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    request = HANDSHAKE + b"Upgrade: websocket\r\n\r\n"
    answer = await asyncio.to_thread(send_and_read_to_the_end, node.client_addresses[0][1], request)
    assert answer.startswith(b"HTTP/1.1 426 ")
    assert no_trouble(caplog) == []


@pytest.mark.parametrize(
    ("request_", "early"),
    [
        # Refused (no Upgrade), then a close frame the parser met before the answer.
        (b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n", masked(0x8, b"\x03\xe8")),
        # Accepted, but what follows is no frame at all: the parser failed first.
        (HANDSHAKE + b"\r\n", b"3\r\n\r\n3\r\n\r\n"),
        # Accepted, then a close frame before the answer.
        (HANDSHAKE + b"\r\n", masked(0x8, b"\x03\xe8")),
    ],
)
async def test_frames_sent_before_the_handshake_is_answered_end_it_quietly(
    node: Node, caplog: pytest.LogCaptureFixture, request_: bytes, early: bytes
) -> None:
    port = node.client_addresses[0][1]
    answer = await asyncio.to_thread(send_and_read_to_the_end, port, request_ + early)
    assert not answer.startswith(b"HTTP/1.1 101")
    assert no_trouble(caplog) == []


async def test_a_refused_handshake_cannot_subscribe_with_frames_sent_along(node: Node) -> None:
    subscribe = masked(0x1, b'{"command":"subscribe","data":["A"]}')
    request = b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n" + subscribe
    answer = await asyncio.to_thread(send_and_read_to_the_end, node.client_addresses[0][1], request)
    assert answer.startswith(b"HTTP/1.1 501 ")

    async def gone() -> bool:
        return node.snapshot().connections == 0

    await eventually(gone, "the node let the connection go")
    assert node.hub.subscription_count() == 0


async def test_frames_sent_along_with_an_accepted_handshake_still_count(
    node: Node, admin: Admin
) -> None:
    subscribe = masked(0x1, b'{"command":"subscribe","data":["A"]}')
    ping = masked(0x1, b'{"command":"ping"}')
    with socket.create_connection(("127.0.0.1", node.client_addresses[0][1])) as sock:
        sock.settimeout(WAIT)
        await asyncio.to_thread(sock.sendall, HANDSHAKE + b"\r\n" + subscribe + ping)
        received = b""
        while b"pong" not in received:
            received += await asyncio.to_thread(sock.recv, 65536)
        assert received.startswith(b"HTTP/1.1 101 ")
        assert node.hub.subscription_count() == 1


# Found by tests/fuzz: the admin port.


async def test_an_expectation_that_is_not_utf8_gets_a_json_417(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    request = b"GET /status/ HTTP/1.1\r\nHost: relay\r\nExpect: 100-c\xed\xa0ontinue\r\n\r\n"
    status, _, body = await asyncio.to_thread(exchange, node.admin_addresses[0][1], request)
    assert status == 417
    assert orjson.loads(body) == {"error": "the only expectation understood is 100-continue"}
    assert no_trouble(caplog) == []


def answer_then_body(port: int, head: bytes, body: bytes) -> bytes:
    """Send the head, read the answer, then send the body and half-close."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(head)
        answer = sock.recv(65536)
        sock.sendall(body)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
        return answer


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"POST / HTTP/1.1\r\nContent-Length: 2000000\r\n", 413),
        (b"PUT / HTTP/1.1\r\nContent-Length: 46\r\n", 405),
        (b"POST /nowhere HTTP/1.1\r\nContent-Length: 46\r\n", 404),
    ],
)
async def test_a_compressed_body_thrown_away_after_the_answer_is_one_warning(
    node: Node, caplog: pytest.LogCaptureFixture, head: bytes, status: int
) -> None:
    # aiohttp reads what is left of a body after the answer, inflating it.
    head += b"Host: relay\r\nContent-Encoding: gzip\r\n\r\n"
    port = node.admin_addresses[0][1]
    answer = await asyncio.to_thread(answer_then_body, port, head, b"not gzip at all, honest" * 2)
    assert answer.startswith(b"HTTP/1.1 %d " % status)
    refused = "refused a malformed request from ?: Can not decode content-encoding: gzip"

    async def logged() -> bool:
        return refused in caplog.text

    await eventually(logged, "the node threw the body away")
    assert no_trouble(caplog) == []
