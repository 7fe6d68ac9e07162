"""Admin-side guards against a real node: secret, networks, bounded lists, deadlines, bodies."""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from relay.core.refusal_lines import REFUSAL_LOG_INTERVAL, RefusalLines
from relay.errors import StartupError
from relay.node.node import Node
from tests.support import (
    WAIT,
    Admin,
    Browser,
    FakeClock,
    eventually,
    local_config,
    notification,
)

StartNode = Callable[..., Awaitable[Node]]
SECRET = "s3cret-for-tests-only"


@pytest.fixture
def secret_file(tmp_path: Path) -> str:
    path = tmp_path / "relay.secret"
    path.write_text(SECRET + "\n")
    return str(path)


async def test_with_a_secret_unauthenticated_posts_are_refused(
    start_node: StartNode, session: aiohttp.ClientSession, secret_file: str
) -> None:
    node = await start_node(local_config(admin={"secret_file": secret_file}))
    admin = Admin(session, node.admin_addresses[0][1])
    browser = await Browser.open(node.client_addresses[0][1])
    await browser.subscribe("PHID-A")
    status, _ = await admin.post(notification("PHID-A", n=1))
    assert status == 401
    status, _ = await admin.post(
        notification("PHID-A", n=2), headers={"Authorization": "Bearer wrong"}
    )
    assert status == 403
    status, _ = await admin.post(
        notification("PHID-A", n=3), headers={"Authorization": f"Bearer {SECRET}"}
    )
    assert status == 200
    assert [m["n"] for m in await browser.drain()] == [3]
    # Phorge's status page cannot send the header; status stays readable.
    status_report = await admin.status()
    assert SECRET not in orjson.dumps(status_report).decode()
    await browser.close()


async def test_a_flood_of_refused_posts_writes_one_line_per_kind(
    start_node: StartNode,
    session: aiohttp.ClientSession,
    secret_file: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Anyone who reaches the port may send refused posts; the log gets a line per kind."""
    node = await start_node(
        local_config(admin={"secret_file": secret_file}, limits={"admin_body_bytes": 1024})
    )
    clock = FakeClock()
    # The interval on a clock the test moves (the state is frozen; its parts are not).
    object.__setattr__(node.admin_state, "refusal_lines", RefusalLines(clock=clock))
    admin = Admin(session, node.admin_addresses[0][1])
    wrong = {"Authorization": "Bearer wrong"}
    right = {"Authorization": f"Bearer {SECRET}"}
    caplog.set_level(logging.WARNING, logger="relay")
    for n in range(50):
        assert (await admin.post(notification("A", n=n), headers=wrong))[0] == 403
        # An application server's own mistake, amid the flood, still gets its line.
        if n == 25:
            assert (await admin.post(None, raw=b"{", headers=right))[0] == 400
        # And so does a body over the limit (refused from its headers alone).
        if n == 30:
            assert (await admin.post(None, raw=b" " * 2048, headers=right))[0] == 413
    clock.advance(REFUSAL_LOG_INTERVAL)
    assert (await admin.post(notification("A"), headers=wrong))[0] == 403
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert [line for line in lines if "wrong shared secret" in line] == [
        "refused a POST from 127.0.0.1: wrong shared secret",
        "refused a POST from 127.0.0.1: wrong shared secret (49 more since the last such line)",
    ]
    assert len([line for line in lines if line.startswith("refused a post from")]) == 1
    assert len([line for line in lines if "-byte limit" in line]) == 1
    # Every one was refused all the same, and the node serves on.
    assert (await admin.post(notification("A"), headers=right))[0] == 200


async def test_peers_send_the_secret(
    start_node: StartNode, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_TEST_SECRET", SECRET)
    guarded = {"secret_env": "RELAY_TEST_SECRET"}
    receiver = await start_node(local_config(admin=guarded))
    peer = {"host": "127.0.0.1", "port": receiver.admin_addresses[0][1], "protocol": "http"}
    sender = await start_node(local_config(admin=guarded, cluster=[peer]))
    browser = await Browser.open(receiver.client_addresses[0][1])
    await browser.subscribe("PHID-P")
    status, _ = await Admin(session, sender.admin_addresses[0][1]).post(
        notification("PHID-P", unique_id="peer-secret"),
        headers={"Authorization": f"Bearer {SECRET}"},
    )
    assert status == 200
    received: list[dict[str, Any]] = []

    async def arrived() -> bool:
        received.extend(await browser.drain())
        return bool(received)

    await eventually(arrived, "the peer delivered the message")
    assert received[0]["uniqueID"] == "peer-secret"
    assert sender.peers.links[0].reading().failed == 0
    await browser.close()


@pytest.mark.parametrize("source", ["file", "env"])
async def test_a_missing_secret_stops_startup_without_echoing_it(
    start_node: StartNode, tmp_path: Path, source: str
) -> None:
    admin = (
        {"secret_file": str(tmp_path / "absent")}
        if source == "file"
        else {"secret_env": "RELAY_TEST_SECRET_UNSET"}
    )
    with pytest.raises(StartupError, match=f"admin.secret_{source}"):
        await start_node(local_config(admin=admin))


async def test_admin_network_allow_list(
    start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    allowed = await start_node(local_config(admin={"allowed_networks": ["127.0.0.0/8"]}))
    assert (await Admin(session, allowed.admin_addresses[0][1]).post(notification("A")))[0] == 200
    refused = await start_node(local_config(admin={"allowed_networks": ["10.0.0.0/8", "::1/128"]}))
    status, body = await Admin(session, refused.admin_addresses[0][1]).post(notification("A"))
    assert status == 403
    assert "may not use the admin port" in body["error"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (notification(*[f"K{n}" for n in range(10_001)]), '"subscribers" lists 10001 keys'),
        (notification("A", touched=[f"F{n}" for n in range(65)]), '"touched" lists 65 nodes'),
    ],
)
async def test_subscriber_and_touched_lists_are_bounded(
    admin: Admin, body: dict[str, Any], reason: str
) -> None:
    status, answer = await admin.post(body)
    assert status == 400
    assert reason in answer["error"]


async def test_a_trickling_body_is_cut_off_with_408(
    start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    node = await start_node(local_config(limits={"admin_body_seconds": 0.3}))
    reader, writer = await asyncio.open_connection("127.0.0.1", node.admin_addresses[0][1])
    writer.write(b"POST / HTTP/1.1\r\nHost: relay\r\nContent-Length: 100\r\n\r\n{")
    async with asyncio.timeout(WAIT):
        status_line = await reader.readline()
    assert status_line.startswith(b"HTTP/1.1 408")
    writer.close()


async def test_slow_headers_are_cut_off(start_node: StartNode) -> None:
    node = await start_node(local_config(limits={"admin_header_seconds": 0.3}))
    reader, writer = await asyncio.open_connection("127.0.0.1", node.admin_addresses[0][1])
    writer.write(b"POST / HTTP/1.1\r\nHost: relay\r\n")
    async with asyncio.timeout(WAIT):
        assert await reader.read() == b""
    writer.close()


async def test_gzip_bodies_are_read_and_bombs_refused(
    start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    node = await start_node(local_config(limits={"admin_body_bytes": 64 * 1024}))
    admin = Admin(session, node.admin_addresses[0][1])
    small = gzip.compress(orjson.dumps(notification("A", n=1)))
    status, _ = await admin.post(None, raw=small, headers={"Content-Encoding": "gzip"})
    assert status == 200
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    payload = bomb.compress(b'{"subscribers":["A"],"pad":"') + b"".join(
        bomb.compress(b"0" * (1024 * 1024)) for _ in range(200)
    )
    payload += bomb.flush()
    assert len(payload) < 1024 * 1024  # 200 MiB inflated from well under 1 MiB

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 16 * 1024):
            yield payload[start : start + 16 * 1024]

    async with session.post(
        admin.base + "/", data=chunks(), headers={"Content-Encoding": "gzip"}
    ) as response:
        assert response.status == 413
    assert (await admin.post(notification("A", n=2)))[0] == 200


async def test_a_peer_refusing_messages_shows_refused_and_is_logged_once(
    start_node: StartNode,
    session: aiohttp.ClientSession,
    secret_file: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = await start_node(local_config(admin={"secret_file": secret_file}))
    peer = {"host": "127.0.0.1", "port": receiver.admin_addresses[0][1], "protocol": "http"}
    sender = await start_node(local_config(cluster=[peer]))  # no secret: the peer says 401
    admin = Admin(session, sender.admin_addresses[0][1])
    with caplog.at_level(logging.INFO, logger="relay.peers"):
        for n in range(3):
            await admin.post(notification("PHID-R", unique_id=f"refused-{n}"))

        async def all_refused() -> bool:
            return sender.peers.links[0].reading().dropped == 3

        await eventually(all_refused, "the three messages were refused")
    reading = sender.peers.links[0].reading()
    assert reading.state == "refused"
    assert reading.last_error is not None
    assert reading.last_error.startswith("HTTP 401")
    assert caplog.text.count("refuses messages") == 1


def ask_to_continue(port: int, head: bytes, body: bytes) -> list[bytes]:
    """POST with ``Expect: 100-continue``, sending ``body`` only after a 100; the status lines."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: relay\r\nExpect: 100-continue\r\n" + head + b"\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer and (piece := sock.recv(65536)):
            answer += piece
        if answer.startswith(b"HTTP/1.1 100 "):
            sock.sendall(body)
            while piece := sock.recv(65536):
                answer += piece
                if b"\r\n\r\n" in answer.split(b"\r\n\r\n", 1)[1]:
                    break
        return [line for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


@pytest.mark.parametrize(
    ("head", "guard", "status"),
    [
        (b"Content-Length: 50\r\n", "secret", b"401"),
        (b"Content-Length: 50\r\nAuthorization: Bearer wrong\r\n", "secret", b"403"),
        (b"Content-Length: 10000000000\r\n", None, b"413"),
        (b"Content-Length: 50\r\n", "networks", b"403"),
    ],
    ids=["no secret", "wrong secret", "too large", "other network"],
)
async def test_a_post_the_headers_refuse_gets_no_100_continue(
    start_node: StartNode, secret_file: str, head: bytes, guard: str | None, status: bytes
) -> None:
    """RFC 9110: the final status instead of inviting a body that will be refused."""
    admin = {
        "secret": {"secret_file": secret_file},
        "networks": {"allowed_networks": ["10.0.0.0/8"]},
        None: {},
    }[guard]
    node = await start_node(local_config(admin=admin))
    lines = await asyncio.to_thread(ask_to_continue, node.admin_addresses[0][1], head, b"")
    assert [line.split(b" ")[1] for line in lines] == [status]


async def test_a_post_the_headers_allow_gets_100_continue_then_its_answer(
    start_node: StartNode, secret_file: str
) -> None:
    node = await start_node(local_config(admin={"secret_file": secret_file}))
    body = orjson.dumps(notification("PHID-A"))
    head = f"Content-Length: {len(body)}\r\nAuthorization: Bearer {SECRET}\r\n".encode()
    lines = await asyncio.to_thread(ask_to_continue, node.admin_addresses[0][1], head, body)
    assert [line.split(b" ")[1] for line in lines] == [b"100", b"200"]
