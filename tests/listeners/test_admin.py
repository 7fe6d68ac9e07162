"""The admin port against a real node: POST, status, and every error status."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import datetime

import aiohttp
import orjson
import pytest
from aiohttp import web
from yarl import URL

from relay import __version__
from relay.core.snapshot import NodeSnapshot
from relay.listeners.admin import create_admin_app
from relay.node.node import Node
from tests.support import WAIT, Admin, Browser, eventually, local_config, notification

OpenBrowser = Callable[..., Awaitable[Browser]]

APHLICT_STATUS_KEYS = {
    "instance",
    "uptime",
    "clients.active",
    "clients.total",
    "messages.in",
    "messages.out",
    "version",
    "history.size",
    "history.age",
}


async def test_post_answers_with_the_node_fingerprint(node: Node, admin: Admin) -> None:
    async with admin.session.post(admin.base + "/", data=orjson.dumps(notification("A"))) as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        assert await r.json() == {"fingerprint": node.hub.fingerprint}
    assert len(node.hub.fingerprint) == 16


async def test_post_reaches_subscribed_browsers_of_that_instance_only(
    node: Node, admin: Admin, open_browser: OpenBrowser
) -> None:
    acme = await open_browser("/~acme/")
    default = await open_browser("/")
    for browser in (acme, default):
        await browser.subscribe("PHID-1")
    body = notification("PHID-1", unique_id="x" * 32)
    assert (await admin.post(body, instance="acme"))[0] == 200
    assert await acme.recv() == {**body, "touched": [node.hub.fingerprint]}
    assert await default.drain() == []
    assert (await admin.post(body, instance=""))[0] == 200
    assert [m["uniqueID"] for m in await default.drain()] == ["x" * 32]
    assert await acme.drain() == []


async def test_status_has_exactly_aphlicts_keys(admin: Admin, open_browser: OpenBrowser) -> None:
    browser = await open_browser("/~acme/")
    await browser.subscribe("A")
    await admin.post(notification("A"), instance="acme")
    status = await admin.status("acme")
    assert set(status) == APHLICT_STATUS_KEYS | {"fingerprint", "cluster", "overload", "process"}
    assert status["process"]["version"] == __version__
    assert status["process"]["pid"] == os.getpid()  # the node runs in the test's process
    assert status["process"]["adopted"] == 0
    started = datetime.fromisoformat(status["process"]["started_at"])
    assert abs(started.timestamp() - time.time()) < WAIT
    assert status["instance"] == "acme"
    assert status["version"] == 7
    assert status["clients.active"] == status["clients.total"] == 1
    assert status["messages.in"] == status["messages.out"] == 1
    assert status["history.size"] == 1
    assert isinstance(status["history.age"], int)
    assert isinstance(status["uptime"], int)
    empty = await admin.status()
    assert (empty["instance"], empty["history.size"], empty["history.age"]) == ("default", 0, None)


async def test_clients_total_counts_every_browser_ever(
    admin: Admin, open_browser: OpenBrowser
) -> None:
    first = await open_browser()
    await first.sync()
    await first.close()
    second = await open_browser()
    await second.sync()

    # The first browser's TCP close reaches the server a moment after close() returns.
    async def one_active() -> bool:
        return bool((await admin.status())["clients.active"] == 1)

    await eventually(one_active, "the first browser is gone")
    status = await admin.status()
    assert status["clients.total"] == 2


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1,2,3]", "must be a JSON object"),
        (b'{"key":"A"}', '"subscribers" is missing'),
        (b'{"subscribers":null}', '"subscribers" must be a list of strings'),
        (b'{"subscribers":"A"}', '"subscribers" must be a list of strings'),
        (b'{"subscribers":[1]}', '"subscribers" must be a list of strings'),
    ],
)
async def test_bad_bodies_get_a_clear_400(
    admin: Admin,
    open_browser: OpenBrowser,
    caplog: pytest.LogCaptureFixture,
    raw: bytes,
    reason: str,
) -> None:
    # A listener is connected: Aphlict answers 500 in that case, relay 400.
    browser = await open_browser()
    await browser.subscribe("A")
    status, body = await admin.post(None, raw=raw)
    assert status == 400
    assert reason in body["error"]
    assert await browser.drain() == []
    # The operator learns of it too: an application server posting wrongly.
    [line] = [r for r in caplog.records if r.getMessage().startswith("refused a post from")]
    assert line.levelname == "WARNING"
    assert reason in line.getMessage()


@pytest.mark.parametrize(("method", "path"), [("GET", "/"), ("PUT", "/"), ("DELETE", "/")])
async def test_other_methods_on_root_get_405(admin: Admin, method: str, path: str) -> None:
    async with admin.session.request(method, admin.base + path) as r:
        assert r.status == 405
        assert r.headers["Allow"] == "POST"
        assert await r.json() == {"error": f"{method} is not allowed on /; use POST"}


@pytest.mark.parametrize("path", ["/nope", "/status/extra", "/status", "/favicon.ico"])
async def test_other_paths_get_404(admin: Admin, path: str) -> None:
    async with admin.session.get(admin.base + path) as r:
        assert r.status == 404
        assert await r.json() == {"error": f"nothing here: {path}"}


@pytest.mark.parametrize("page", ["dashboard", "cluster-status"])
async def test_relays_own_pages_without_the_slash_redirect(
    admin: Admin, node: Node, page: str
) -> None:
    async with admin.session.get(f"{admin.base}/{page}?x=1", allow_redirects=False) as r:
        assert r.status == 308
        assert r.headers["Location"] == f"/{page}/?x=1"
    # The query keeps its value: decoded and written back, %23 became a fragment.
    url = URL(f"{admin.base}/{page}?next=%2F%2Felsewhere.example%23", encoded=True)
    async with admin.session.get(url, allow_redirects=False) as r:
        location = URL(r.headers["Location"])
        assert location.path == f"/{page}/"
        assert location.query["next"] == "//elsewhere.example#"
    async with admin.session.get(f"{admin.base}/dashboard") as r:
        assert r.status == 200
        assert r.url.path == "/dashboard/"
        assert "<html" in await r.text()


async def test_a_repeated_post_is_answered_delivered_once_and_noted_at_debug(
    admin: Admin, open_browser: OpenBrowser, caplog: pytest.LogCaptureFixture
) -> None:
    browser = await open_browser("/")
    await browser.subscribe("PHID-RETRY")
    body = notification("PHID-RETRY", unique_id="r" * 32)
    caplog.set_level("DEBUG", logger="relay.admin")
    # An application server retrying the same message gets 200 both times.
    assert (await admin.post(body))[0] == 200
    assert (await admin.post(body))[0] == 200
    assert (await admin.post(notification("PHID-RETRY", unique_id="s" * 32)))[0] == 200
    assert [m["uniqueID"] for m in await browser.drain()] == ["r" * 32, "s" * 32]
    notes = [r.getMessage() for r in caplog.records if "not delivered again" in r.getMessage()]
    assert len(notes) == 1
    assert notes[0].endswith(": duplicate")


async def test_a_failure_nobody_foresaw_is_a_json_500_logged_once(
    node: Node, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> NodeSnapshot:
        raise RuntimeError("a bug in taking the snapshot")

    # The node's own admin state, but for the one reader that fails.
    runner = web.AppRunner(create_admin_app(replace(node.admin_state, snapshot=broken)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        admin = Admin(session, runner.addresses[0][1])
        async with admin.session.get(admin.base + "/status/") as r:
            assert r.status == 500
            assert await r.json() == {"error": "internal error; the node's log has the details"}
    finally:
        await runner.cleanup()
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert [record.getMessage() for record in errors] == ["error while answering GET /status/"]


async def test_body_over_the_limit_gets_413_and_the_node_keeps_serving(
    start_node: Callable[..., Awaitable[Node]], session: aiohttp.ClientSession
) -> None:
    node = await start_node(local_config(limits={"admin_body_bytes": 4096}))
    admin = Admin(session, node.admin_addresses[0][1])
    padding = "x" * 5000
    status, answer = await admin.post(notification("A", pad=padding))
    assert status == 413
    assert answer == {"error": "request body exceeds the 4096-byte limit"}

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    async with session.post(admin.base + "/", data=chunked()) as r:
        assert r.status == 413
    assert (await admin.post(notification("A", pad="small")))[0] == 200
