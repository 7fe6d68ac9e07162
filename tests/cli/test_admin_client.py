"""The CLI's admin-port client: finding the node from options, and one request to it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from relay.cli.admin_client import AdminTarget, find_target
from relay.config import parse_config
from relay.errors import RelayError
from tests.support import local_config


def config(**admin: Any) -> Any:
    data = local_config()
    data["servers"][1].update(admin)
    return parse_config(data)


@pytest.mark.parametrize(
    ("options", "base"),
    [
        ({"url": "relay1.example.com"}, "http://relay1.example.com:22281"),
        ({"url": "https://relay1:9443/"}, "https://relay1:9443"),
        ({"url": "http://[::1]:7000"}, "http://[::1]:7000"),
        ({}, "http://127.0.0.1:22281"),
        ({"host": "::1", "port": 7001}, "http://[::1]:7001"),
    ],
)
def test_where_the_options_point(options: dict[str, Any], base: str) -> None:
    assert find_target(None, **options).base == base


def test_a_config_gives_its_first_admin_listener_and_host_or_port_replace_its_own() -> None:
    wildcard = config(port=4000, listen="0.0.0.0")
    assert find_target(wildcard).base == "http://127.0.0.1:4000"  # a wildcard means this host
    assert find_target(wildcard, host="10.0.0.5").base == "http://10.0.0.5:4000"
    assert find_target(wildcard, port=4001).base == "http://127.0.0.1:4001"
    # A listener on "::" is called on the IPv6 loopback.
    assert find_target(config(port=4000, listen="::")).base == "http://[::1]:4000"
    with pytest.raises(RelayError, match="port 0"):
        find_target(config(port=0))


def test_the_secret_comes_from_the_option_or_the_config(tmp_path: Path) -> None:
    option, configured = tmp_path / "option", tmp_path / "configured"
    option.write_text("from-the-option\n")
    configured.write_text("from-the-config\n")
    data = local_config(admin={"secret_file": str(configured)})
    data["servers"][1]["port"] = 4000
    with_secret = parse_config(data)
    assert find_target(with_secret).secret.bearer() == "Bearer from-the-config"  # type: ignore[union-attr]
    chosen = find_target(with_secret, secret_file=str(option))
    assert chosen.secret.bearer() == "Bearer from-the-option"  # type: ignore[union-attr]
    assert "from-the" not in repr(chosen)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(RelayError, match="is empty"):
        find_target(None, secret_file=str(tmp_path / "empty"))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://", "names no host"),
        ("http://user:pw@relay1", "no credentials in the URL"),
        ("http://relay1/?instance=x", "without a path"),
    ],
)
def test_unusable_urls_are_refused_saying_why(url: str, problem: str) -> None:
    with pytest.raises(RelayError, match=problem):
        find_target(None, url=url)


async def test_https_is_verified_unless_told_otherwise(start_node: Any, tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    data = local_config()
    data["servers"][1].update({"ssl.key": str(key), "ssl.cert": str(cert)})
    node = await start_node(data)
    base = f"https://127.0.0.1:{node.admin_addresses[0][1]}"
    with pytest.raises(RelayError, match=r"cannot reach the node's admin port: .*CERTIFICATE"):
        await asyncio.to_thread(AdminTarget(base).request, "/status/")
    status = await asyncio.to_thread(AdminTarget(base, verify_tls=False).request, "/status/")
    assert status["fingerprint"] == node.hub.fingerprint


async def test_an_answer_that_is_not_json_is_reported(start_node: Any) -> None:
    node = await start_node()
    target = AdminTarget(f"http://127.0.0.1:{node.admin_addresses[0][1]}")
    with pytest.raises(RelayError, match="not JSON; is this a relay admin port"):
        await asyncio.to_thread(target.request, "/metrics")


async def test_a_client_port_given_by_mistake_is_named_as_such(start_node: Any) -> None:
    node = await start_node()
    url = f"http://127.0.0.1:{node.client_addresses[0][1]}/status/"
    target = AdminTarget(url.removesuffix("/status/"))
    with pytest.raises(RelayError) as refused:
        await asyncio.to_thread(target.request, "/status/")
    assert str(refused.value) == (
        f"{url}: the node answered 501 (HTTP/501 Use Websockets): that is a client port, "
        'where browsers connect; give its admin port instead (the config\'s "admin" server, '
        "22281 by default)"
    )


async def test_a_refusal_quotes_the_nodes_error_and_adds_the_callers_hint(
    start_node: Any,
) -> None:
    node = await start_node()
    base = f"http://127.0.0.1:{node.admin_addresses[0][1]}"
    hints = {404: "look elsewhere", 405: "not this one"}
    with pytest.raises(RelayError) as refused:
        await asyncio.to_thread(AdminTarget(base).request, "/nowhere/", hints=hints)
    assert str(refused.value) == (
        f"{base}/nowhere/: the node answered 404: nothing here: /nowhere/; look elsewhere"
    )
    with pytest.raises(RelayError) as unhinted:
        await asyncio.to_thread(AdminTarget(base).request, "/nowhere/")
    assert str(unhinted.value) == f"{base}/nowhere/: the node answered 404: nothing here: /nowhere/"


async def test_an_answer_from_something_else_is_quoted_briefly() -> None:
    async def gateway(request: web.Request) -> web.Response:
        page = "<html>\n<body>" + "Bad Gateway " * 40 + "</body>\n</html>\n"
        return web.Response(status=502, text=page)

    async def silent(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/status/", gateway)
    app.router.add_get("/cluster-status/", silent)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        target = AdminTarget(f"http://127.0.0.1:{port}")
        with pytest.raises(RelayError) as refused:
            await asyncio.to_thread(target.request, "/status/")
        said = str(refused.value).split(": the node answered 502: ", 1)[1]
        assert said == ("<html> <body>" + "Bad Gateway " * 40)[:200] + "..."
        with pytest.raises(RelayError, match=r"answered 503: \(an empty answer\)$"):
            await asyncio.to_thread(target.request, "/cluster-status/")
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (
            b"hello there\r\n\r\n",
            "the answer is not HTTP (BadStatusLine); is this a relay admin port?",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{",
            "the answer was cut short; try again",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]",
            "the answer is not a JSON object; is this a relay admin port?",
        ),
    ],
)
async def test_an_answer_the_commands_cannot_read_is_a_relay_error(
    answer: bytes, problem: str
) -> None:
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        with pytest.raises(RelayError) as refused:
            await asyncio.to_thread(AdminTarget(base).request, "/status/")
        assert str(refused.value) == f"{base}/status/: {problem}"
    finally:
        server.close()
        await server.wait_closed()


async def test_an_answer_trickling_in_is_given_up_on_at_the_deadline() -> None:
    trickling, given_up, ended = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        trickling.set()
        # Each byte well within the timeout of one read, the whole far beyond
        # it; bounded, and over once the client has given up.
        for _ in range(1000):
            if given_up.is_set():
                break
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.close()
        ended.set()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        target = AdminTarget(base, timeout=0.5)
        with pytest.raises(RelayError) as refused:
            await asyncio.to_thread(target.request, "/status/")
        assert trickling.is_set()
        assert str(refused.value) == (
            f"{base}/status/: no whole answer within 0.5 s; is the node overloaded?"
        )
    finally:
        given_up.set()
        server.close()
        await asyncio.wait_for(ended.wait(), 5)
