"""The client port against a real node: handshake, commands, replay, bad frames, shutdown."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
import websockets

from relay.core.commands import Ping, Replay, Subscribe, Unsubscribe
from relay.core.encoded import EncodedMessage
from relay.errors import StartupError
from relay.listeners.browser import BrowserConnection
from relay.node.node import Node
from tests.support import WAIT, Admin, Browser, eventually, local_config, notification

OpenBrowser = Callable[..., Awaitable[Browser]]
StartNode = Callable[..., Awaitable[Node]]


async def test_plain_http_gets_501_use_websockets(node: Node) -> None:
    port = node.client_addresses[0][1]
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as r:
        assert r.status == 501
        assert await r.text() == "HTTP/501 Use Websockets\n"


async def test_plain_http_sent_with_more_after_it_still_gets_501(node: Node) -> None:
    """Two pipelined GETs: the bytes after the first are no WebSocket frames."""
    request = b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n"

    def exchange() -> bytes:
        with socket.create_connection(("127.0.0.1", node.client_addresses[0][1])) as sock:
            sock.settimeout(WAIT)
            sock.sendall(request * 2)
            answer = b""
            while piece := sock.recv(65536):
                answer += piece
            return answer

    assert (await asyncio.to_thread(exchange)).startswith(b"HTTP/1.1 501 ")


@pytest.mark.parametrize("path", ["/", "/ws/", "/~acme/", "/some/prefix/~acme", "/x?y=1"])
async def test_any_path_upgrades(open_browser: OpenBrowser, path: str) -> None:
    browser = await open_browser(path)
    assert await browser.drain() == []


async def test_a_browser_with_a_large_cookie_header_connects(
    admin: Admin, open_browser: OpenBrowser
) -> None:
    """Cookies for the Phorge host come along (the client port is on it): Aphlict takes 16 KiB.

    Node reads request heads of up to 16 KiB whatever their lines, so a Cookie
    line of 12 KiB (single sign-on cookies, a parent domain's) connects to
    Aphlict; websockets alone would refuse any line over 8 KiB with 431.
    """
    browser = await open_browser(additional_headers={"Cookie": "sso=" + "x" * 12_000})
    await browser.subscribe("PHID-USER-1")
    await admin.post(notification("PHID-USER-1", unique_id="u1"))
    assert (await browser.recv())["uniqueID"] == "u1"


@pytest.mark.parametrize(
    "headers",
    [
        {"Cookie": "sso=" + "x" * 17_000},
        # Lines websockets takes one by one (under 16 KiB each), 20 KiB together.
        {"Cookie": "sso=" + "x" * 10_000, "X-Other": "y" * 10_000},
    ],
    ids=["one line", "two lines"],
)
async def test_a_head_longer_than_aphlicts_is_refused(
    open_browser: OpenBrowser, headers: dict[str, str]
) -> None:
    """Node answers a request head over 16 KiB with 431, and so does relay, however it is split."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        await open_browser(additional_headers=headers)
    assert refused.value.response.status_code == 431


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 on this machine")
async def test_listening_on_the_ipv6_wildcard_takes_ipv4_clients_too(
    start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    """Node binds ``::`` for IPv6 and IPv4 both: browsers and posts over IPv4 keep working."""
    node = await start_node(
        local_config(
            servers=[
                {"type": "client", "port": 0, "listen": "::"},
                {"type": "admin", "port": 0, "listen": "::"},
            ]
        )
    )
    browsers = [
        await Browser.open(node.client_addresses[0][1], host=host) for host in ("127.0.0.1", "::1")
    ]
    try:
        for browser in browsers:
            await browser.subscribe("PHID-USER-1")
        admin = Admin(session, node.admin_addresses[0][1])  # over IPv4
        assert (await admin.post(notification("PHID-USER-1", unique_id="u1")))[0] == 200
        assert [(await browser.recv())["uniqueID"] for browser in browsers] == ["u1", "u1"]
    finally:
        for browser in browsers:
            await browser.close()


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 on this machine")
@pytest.mark.parametrize("kind", ["client", "admin"])
async def test_the_ipv6_wildcard_cannot_listen_where_ipv4_is_taken(
    start_node: StartNode, kind: str
) -> None:
    """Taking IPv4 too, ``::`` fails where IPv4 listeners hold the port, as Aphlict's does."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        servers = [
            {"type": "client", "port": 0, "listen": "::"},
            {"type": "admin", "port": 0, "listen": "::"},
        ]
        index = 0 if kind == "client" else 1
        servers[index]["port"] = port
        with pytest.raises(StartupError) as failed:
            await start_node(local_config(servers=servers))
    assert str(failed.value) == (
        f"servers[{index}].port: cannot listen for {kind} connections on [::]:{port}: "
        "Address already in use (another process holds the port)"
    )


async def test_ping_gets_pong(open_browser: OpenBrowser) -> None:
    browser = await open_browser()
    await browser.send("ping")
    assert await browser.recv() == {"type": "pong"}


async def test_subscribe_and_unsubscribe(admin: Admin, open_browser: OpenBrowser) -> None:
    browser = await open_browser()
    await browser.subscribe("A", "B")
    await admin.post(notification("A", n=1))
    await admin.post(notification("B", n=2))
    await admin.post(notification("C", n=3))
    assert [m["n"] for m in await browser.drain()] == [1, 2]
    await browser.unsubscribe("A")
    await admin.post(notification("A", n=4))
    await admin.post(notification("A", "B", n=5))
    assert [m["n"] for m in await browser.drain()] == [5]


async def test_a_message_for_two_of_my_keys_arrives_once(
    admin: Admin, open_browser: OpenBrowser
) -> None:
    browser = await open_browser()
    await browser.subscribe("A", "B")
    await admin.post(notification("A", "B", n=1))
    assert [m["n"] for m in await browser.drain()] == [1]


async def test_replay_sends_what_was_missed_in_order(
    admin: Admin, open_browser: OpenBrowser
) -> None:
    for n in range(3):
        await admin.post(notification("A", n=n), instance="acme")
    await admin.post(notification("B", n=99), instance="acme")
    await admin.post(notification("A", n=100), instance="other")
    browser = await open_browser("/~acme/")
    await browser.subscribe("A")
    await browser.send("replay", {"age": 60000})
    assert [m["n"] for m in await browser.drain()] == [0, 1, 2]
    await browser.send("replay", {})
    assert [m["n"] for m in await browser.drain()] == [0, 1, 2]
    await browser.send("replay", {"age": 0})
    assert await browser.drain() == []


@pytest.mark.parametrize(
    ("frame", "logged"),
    [
        ("this is not json", "not valid JSON"),
        ('{"command":"dance","data":[]}', 'unknown command "dance"'),
        ('{"command":"subscribe","data":"A"}', "list of strings"),
        ('{"command":"subscribe","data":{"A":true}}', "list of strings"),
        ('{"command":"replay","data":"soon"}', "an object"),
        ('{"command":"unsubscribe","data":7}', "list of strings"),
        ("[]", "must be a JSON object"),
    ],
)
async def test_unusable_frames_are_logged_and_the_connection_keeps_working(
    admin: Admin,
    open_browser: OpenBrowser,
    caplog: pytest.LogCaptureFixture,
    frame: str,
    logged: str,
) -> None:
    browser = await open_browser()
    await browser.subscribe("A")
    with caplog.at_level(logging.INFO, logger="relay.browser"):
        await browser.ws.send(frame)
        await browser.sync()
    assert any(logged in record.getMessage() for record in caplog.records)
    await admin.post(notification("A", n=1))
    assert [m["n"] for m in await browser.drain()] == [1]


async def test_binary_frames_are_ignored(admin: Admin, open_browser: OpenBrowser) -> None:
    browser = await open_browser()
    await browser.subscribe("A")
    await browser.ws.send(b'{"command":"unsubscribe","data":["A"]}')
    await admin.post(notification("A", n=1))
    assert [m["n"] for m in await browser.drain()] == [1]


async def test_fragmented_commands_are_reassembled(admin: Admin, open_browser: OpenBrowser) -> None:
    browser = await open_browser()
    await browser.ws.send(iter(['{"command":"subscribe",', '"data":["A"]}']))
    await browser.sync()
    await admin.post(notification("A", n=1))
    assert [m["n"] for m in await browser.drain()] == [1]


async def test_invalid_utf8_closes_with_1007(open_browser: OpenBrowser) -> None:
    browser = await open_browser()
    # A text frame carrying bytes that are not UTF-8, as a broken client would send.
    await browser.ws.send(b"\xff\xfe", text=True)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(browser.ws.recv(), WAIT)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1007


async def test_oversized_frame_closes_with_1009(
    start_node: Callable[..., Awaitable[Node]],
) -> None:
    node = await start_node(local_config(limits={"browser_message_bytes": 2048}))
    browser = await Browser.open(node.client_addresses[0][1])
    await browser.send("subscribe", ["K" * 4000])
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(browser.ws.recv(), WAIT)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


async def test_unfinished_handshakes_are_cut_off(
    start_node: Callable[..., Awaitable[Node]],
) -> None:
    node = await start_node(local_config(limits={"handshake_seconds": 0.2}))
    reader, writer = await asyncio.open_connection("127.0.0.1", node.client_addresses[0][1])
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    async with asyncio.timeout(WAIT):
        assert await reader.read() == b""
    writer.close()
    assert node.client_listeners[0].connection_count == 0


async def test_shutdown_closes_browsers_with_1001(
    start_node: Callable[..., Awaitable[Node]],
) -> None:
    node = await start_node()
    browsers = [await Browser.open(node.client_addresses[0][1]) for _ in range(3)]
    for browser in browsers:
        await browser.sync()
    await node.stop()
    for browser in browsers:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(browser.ws.recv(), WAIT)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001


@pytest.mark.parametrize(
    ("count", "connections", "browsers"),
    [(1, "1 browser connection", "1 browser did"), (2, "2 browser connections", "2 browsers did")],
)
async def test_the_shutdown_log_lines_count_browsers_in_words(
    start_node: StartNode,
    caplog: pytest.LogCaptureFixture,
    count: int,
    connections: str,
    browsers: str,
) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    drained, stopped = await start_node(), await start_node()
    for node in (drained, stopped):
        for browser in [await Browser.open(node.client_addresses[0][1]) for _ in range(count)]:
            await browser.sync()
    await drained.stop()
    assert any(m.startswith(f"draining: closing {connections} over ") for m in caplog.messages), (
        caplog.messages
    )
    # A listener stopped without a drain, and a grace too short for any close.
    caplog.clear()
    await stopped.client_listeners[0].stop(0)
    assert caplog.messages[:2] == [
        f"closing {connections}",
        f"{browsers} not close in time; resetting {'it' if count == 1 else 'them'}",
    ]


async def test_disconnected_browsers_are_forgotten(
    node: Node, admin: Admin, open_browser: OpenBrowser
) -> None:
    browser = await open_browser()
    await browser.subscribe("A")
    await browser.close()

    async def none_active() -> bool:
        return bool((await admin.status())["clients.active"] == 0)

    await eventually(none_active, "the browser is gone")
    assert node.hub._index._keys_of == {}


async def test_one_browser_cannot_flood_the_log(
    open_browser: OpenBrowser, caplog: pytest.LogCaptureFixture
) -> None:
    browser = await open_browser()
    with caplog.at_level(logging.INFO, logger="relay.browser"):
        for _ in range(100):
            await browser.ws.send("garbage")
        await browser.sync()
    complaints = [r for r in caplog.records if "unusable frame" in r.getMessage()]
    assert len(complaints) == 1
    assert "logged at DEBUG only" in complaints[0].getMessage()


class _ShoutingConnection(BrowserConnection):
    """A connection that answers every ping with its own frame before relay's pong."""

    __slots__ = ()

    def _run(self, command: Subscribe | Unsubscribe | Replay | Ping) -> None:
        if isinstance(command, Ping):
            self.deliver(EncodedMessage(b'{"type":"shout"}'))
        super()._run(command)


async def test_a_node_builds_browsers_with_the_connection_factory_it_is_given(
    start_node: StartNode,
) -> None:
    node = await start_node(connection_factory=_ShoutingConnection)
    port = node.client_addresses[0][1]
    async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
        await ws.send('{"command": "ping"}')
        replies = [await asyncio.wait_for(ws.recv(), WAIT) for _ in range(2)]
    assert replies == ['{"type":"shout"}', '{"type":"pong"}']
