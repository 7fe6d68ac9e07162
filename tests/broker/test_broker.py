"""Broker mode with in-process nodes on a real redis-server: delivery, history, faults."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import trustme

from relay.config import parse_config
from relay.node.node import Node
from tests.redis_harness import RedisServer
from tests.support import Admin, Browser, eventually, free_ports, local_config, notification

StartNode = Callable[..., Awaitable[Node]]

#: Quick fault detection, so the fault tests take a second or two, not ten.
FAST = {
    "timeout_seconds": 0.5,
    "connect_timeout_seconds": 0.5,
    "ping_interval_seconds": 0.2,
    "stale_seconds": 1.0,
    "backoff_initial_seconds": 0.05,
    "backoff_max_seconds": 0.5,
}


def broker_config(redis: RedisServer, **broker: Any) -> dict[str, Any]:
    return local_config(broker={"url": redis.url, **broker})


async def start_nodes(
    start_node: StartNode, redis: RedisServer, count: int, **broker: Any
) -> list[Node]:
    return [await start_node(broker_config(redis, **broker)) for _ in range(count)]


async def open_browser(node: Node, *keys: str, instance: str | None = None) -> Browser:
    path = f"/~{instance}/" if instance else "/"
    browser = await Browser.open(node.client_addresses[0][1], path)
    await browser.subscribe(*keys)
    return browser


async def collect(browser: Browser, into: list[dict[str, Any]], count: int, what: str) -> None:
    async def enough() -> bool:
        into.extend(await browser.drain())
        return len(into) >= count

    await eventually(enough, what)


async def test_each_node_delivers_each_message_once(
    redis_server: RedisServer, start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    nodes = await start_nodes(start_node, redis_server, 3)
    browsers = [await open_browser(node, "PHID-B") for node in nodes]
    other = await open_browser(nodes[1], "PHID-B", instance="elsewhere")
    posts = 9
    for n in range(posts):
        node = nodes[n % 3]
        status, receipt = await Admin(session, node.admin_addresses[0][1]).post(
            notification("PHID-B", unique_id=f"b-{n}")
        )
        assert status == 200
        assert receipt["fingerprint"] == node.hub.fingerprint
    for index, browser in enumerate(browsers):
        seen: list[dict[str, Any]] = []
        await collect(browser, seen, posts, f"node {index} delivered every message")
        seen += await browser.drain()
        assert sorted(m["uniqueID"] for m in seen) == [f"b-{n}" for n in range(posts)]
    assert await other.drain() == []
    for n, node in enumerate(nodes):
        broker = (await Admin(session, node.admin_addresses[0][1]).status())["broker"]
        assert broker["state"] == "up"
        assert broker["published"] == posts // 3
        # Every message once over the subscription, its own included (and skipped).
        assert broker["received"] == posts, (n, broker)
    for browser in [*browsers, other]:
        await browser.close()


async def test_a_node_started_later_replays_the_whole_cluster_in_order(
    redis_server: RedisServer, start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    first, second = await start_nodes(start_node, redis_server, 2)
    watcher = await open_browser(second, "PHID-R")
    seen: list[dict[str, Any]] = []
    for n in range(10):
        node = (first, second)[n % 2]
        await Admin(session, node.admin_addresses[0][1]).post(
            notification("PHID-R", unique_id=f"r-{n}")
        )
        # Posted one after the other's delivery: the cluster's order is this order.
        await collect(watcher, seen, n + 1, f"message {n} went round")
    late = await start_node(broker_config(redis_server))
    browser = await open_browser(late, "PHID-R")
    await browser.send("replay", {"age": 60000})
    replayed = await browser.drain()
    assert [m["uniqueID"] for m in replayed] == [f"r-{n}" for n in range(10)]
    # What the late node reloaded is history, not news: nothing arrived unasked.
    fresh = await open_browser(late, "PHID-R")
    assert await fresh.drain() == []
    for b in (watcher, browser, fresh):
        await b.close()


async def test_redis_down_costs_nothing_local_and_the_queue_catches_up(
    redis_server: RedisServer,
    start_node: StartNode,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    here, there = await start_nodes(start_node, redis_server, 2, **FAST)
    admin = Admin(session, here.admin_addresses[0][1])
    local = await open_browser(here, "PHID-D")
    remote = await open_browser(there, "PHID-D")
    redis_server.kill()
    for n in range(5):
        started = time.monotonic()
        status, _ = await admin.post(notification("PHID-D", unique_id=f"d-{n}"))
        assert status == 200
        assert (await local.recv())["uniqueID"] == f"d-{n}"
        assert time.monotonic() - started < 0.1

    async def down() -> bool:
        broker = (await admin.status())["broker"]
        return bool(broker["state"] == "down" and broker["queue"] == 5)

    await eventually(down, "the broker is reported down with 5 posts queued")
    await asyncio.to_thread(redis_server.start)
    seen: list[dict[str, Any]] = []
    await collect(remote, seen, 5, "the queued posts reached the other node")
    assert [m["uniqueID"] for m in seen] == [f"d-{n}" for n in range(5)]
    broker = (await admin.status())["broker"]
    assert broker["state"] == "up"
    assert broker["queue"] == 0
    assert broker["reconnects"] == 1
    assert broker["last_error"]
    back = [m for m in caplog.messages if " is up again after " in m]
    assert any(m.endswith(" s down (5 posts queued)") for m in back), back
    assert await local.drain() == []  # nothing twice
    for b in (local, remote):
        await b.close()


async def test_large_posts_queued_for_an_absent_redis_keep_to_the_byte_bound(
    redis_server: RedisServer, start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    """30 posts of 200 KB while Redis is away: only the newest 1 MiB waits for it."""
    here, there = await start_nodes(
        start_node, redis_server, 2, queue_max_bytes=1024 * 1024, **FAST
    )
    admin = Admin(session, here.admin_addresses[0][1])
    remote = await open_browser(there, "PHID-L")
    redis_server.kill()
    pad = "x" * (200 * 1024)
    for n in range(30):
        status, _ = await admin.post(notification("PHID-L", unique_id=f"l-{n}", pad=pad))
        assert status == 200

    async def bounded() -> bool:
        broker = (await admin.status())["broker"]
        return bool(broker["state"] == "down" and broker["queue"] == 5)

    await eventually(bounded, "the broker is reported down with the newest 5 posts queued")
    assert (await admin.status())["broker"]["dropped"] == 25
    await asyncio.to_thread(redis_server.start)
    seen: list[dict[str, Any]] = []
    await collect(remote, seen, 5, "the queued posts reached the other node")
    assert [m["uniqueID"] for m in seen] == [f"l-{n}" for n in range(25, 30)]
    await remote.close()


async def test_a_hung_redis_is_detected_and_left_behind(
    redis_server: RedisServer, start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    here, there = await start_nodes(start_node, redis_server, 2, **FAST)
    admin = Admin(session, here.admin_addresses[0][1])
    remote = await open_browser(there, "PHID-H")
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)  # connected, but nothing answers
    try:

        async def down() -> bool:
            return bool((await admin.status())["broker"]["state"] == "down")

        await eventually(down, "the hung Redis is reported down")
        await admin.post(notification("PHID-H", unique_id="h-1"))
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    seen: list[dict[str, Any]] = []
    await collect(remote, seen, 1, "the post reached the other node once Redis answered")
    assert [m["uniqueID"] for m in seen] == ["h-1"]
    await remote.close()


async def test_status_and_metrics_never_show_the_password(
    start_node: StartNode,
    tmp_path: Any,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redis = RedisServer(tmp_path / "redis", "--requirepass", "s3cret-pw").start()
    try:
        monkeypatch.setenv("RELAY_TEST_REDIS_PW", "s3cret-pw")
        node = await start_node(broker_config(redis, password_env="RELAY_TEST_REDIS_PW"))
        admin = Admin(session, node.admin_addresses[0][1])
        status = await admin.status()
        assert status["broker"]["state"] == "up"
        async with session.get(admin.base + "/metrics") as response:
            metrics = await response.text()
        assert "relay_broker_up 1.0" in metrics
        assert "s3cret-pw" not in repr(status) + metrics + repr(node.config)
    finally:
        redis.stop()


async def test_a_migration_mixes_mesh_and_broker_nodes_without_copies(
    redis_server: RedisServer,
    start_node: StartNode,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    # "mesh" stands for an Aphlict node: it lists both broker-mode nodes as
    # peers; they list it (the Aphlict nodes still running) in theirs.
    mesh_port, b1_port, b2_port = free_ports(3)

    def config(admin_port: int, peers: list[int], broker: bool) -> dict[str, Any]:
        data = local_config(
            cluster=[{"host": "127.0.0.1", "port": p, "protocol": "http"} for p in peers]
        )
        data["servers"][1]["port"] = admin_port
        if broker:
            data["broker"] = {"url": redis_server.url}
        return data

    mesh = await start_node(config(mesh_port, [b1_port, b2_port], broker=False))
    b1 = await start_node(config(b1_port, [mesh_port], broker=True))
    b2 = await start_node(config(b2_port, [mesh_port], broker=True))
    nodes = {"mesh": mesh, "b1": b1, "b2": b2}
    said = "broker mode with 1 cluster peer: what application servers post here also goes to it"
    assert sum(m.startswith(said) for m in caplog.messages) == 2, caplog.messages
    browsers = {name: await open_browser(node, "PHID-MIG") for name, node in nodes.items()}
    for name, node in nodes.items():
        status, _ = await Admin(session, node.admin_addresses[0][1]).post(
            notification("PHID-MIG", unique_id=f"mig-{name}")
        )
        assert status == 200
    expected = sorted(f"mig-{name}" for name in nodes)
    seen: dict[str, list[dict[str, Any]]] = {name: [] for name in nodes}
    for name, browser in browsers.items():
        await collect(browser, seen[name], 3, f"{name} delivered all three")

    async def forwarding_done() -> bool:
        # The mesh node floods as Aphlict does: its own post to both, each
        # broker node's post to the other one. A broker-mode node POSTs to the
        # mesh node only what was posted to it directly.
        sent = [link.reading().sent for node in nodes.values() for link in node.peers.links]
        brokers = [node.broker for node in (b1, b2) if node.broker is not None]
        published = sum(broker.published for broker in brokers)
        received = [broker.received for broker in brokers]
        return sent == [2, 2, 1, 1] and received == [published, published]

    await eventually(forwarding_done, "every POST between the nodes and every publish went round")
    for name, browser in browsers.items():
        seen[name] += await browser.drain()
        assert sorted(m["uniqueID"] for m in seen[name]) == expected, name
    for browser in browsers.values():
        await browser.close()


class FreezableProxy:
    """A TCP proxy to Redis whose connections can stop passing Redis' replies on.

    A half-dead path that keeps the socket open, as a broken middlebox does.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._streams: list[asyncio.StreamWriter] = []
        self._subscriptions: list[asyncio.Event] = []

    async def start(self) -> FreezableProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def freeze_subscriptions(self) -> None:
        """From now on, connections that subscribed get nothing more from Redis."""
        for frozen in self._subscriptions:
            frozen.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._streams += [writer, up_writer]
        frozen = asyncio.Event()

        async def client_to_redis() -> None:
            while data := await reader.read(65536):
                if b"SUBSCRIBE" in data.upper():
                    self._subscriptions.append(frozen)
                up_writer.write(data)

        async def redis_to_client() -> None:
            while data := await up_reader.read(65536):
                if not frozen.is_set():
                    writer.write(data)

        with contextlib.suppress(OSError, asyncio.CancelledError):
            await asyncio.gather(client_to_redis(), redis_to_client())

    async def stop(self) -> None:
        for stream in self._streams:
            stream.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_a_subscription_that_stops_receiving_is_renewed_and_catches_up(
    redis_server: RedisServer, start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    proxy = await FreezableProxy(redis_server.port).start()
    try:
        here = await start_node(local_config(broker={"url": redis_server.url}))
        there = await start_node(
            local_config(broker={**FAST, "url": f"redis://127.0.0.1:{proxy.port}/0"})
        )
        remote = await open_browser(there, "PHID-S")
        proxy.freeze_subscriptions()
        # Posted while the far node's subscription is silently dead.
        await Admin(session, here.admin_addresses[0][1]).post(
            notification("PHID-S", unique_id="s-1")
        )
        seen: list[dict[str, Any]] = []
        await collect(remote, seen, 1, "the message arrived once the subscription was renewed")
        assert [m["uniqueID"] for m in seen] == ["s-1"]
        reading = there.snapshot().broker
        assert reading is not None
        assert reading.stale_subscriptions == 1
        assert reading.state == "up"
        assert reading.last_error is not None
        assert "received nothing" in reading.last_error
        assert await remote.drain() == []
        await remote.close()
    finally:
        await proxy.stop()


async def test_the_master_is_found_through_sentinel(
    redis_server: RedisServer, start_node: StartNode, session: aiohttp.ClientSession, tmp_path: Any
) -> None:
    sentinel = RedisServer.sentinel(tmp_path / "sentinel", "relayMaster", redis_server.port)
    try:
        broker = {
            "url": "redis://relayMaster/0",
            "sentinels": [{"host": "127.0.0.1", "port": sentinel.port}],
        }
        here, there = [await start_node(local_config(broker=broker)) for _ in range(2)]
        remote = await open_browser(there, "PHID-SEN")
        await Admin(session, here.admin_addresses[0][1]).post(
            notification("PHID-SEN", unique_id="sen-1")
        )
        assert (await remote.recv())["uniqueID"] == "sen-1"
        status = (await Admin(session, here.admin_addresses[0][1]).status())["broker"]
        assert status["state"] == "up"
        assert f"sentinels 127.0.0.1:{sentinel.port}" in status["url"]
        await remote.close()
    finally:
        sentinel.stop()


async def test_a_node_starts_at_once_and_serves_while_redis_is_away(
    start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    [port] = free_ports(1)  # nothing listens there
    started = time.monotonic()
    node = await start_node(local_config(broker={"url": f"redis://127.0.0.1:{port}/0", **FAST}))
    assert time.monotonic() - started < 1.0  # refused at once: no waiting for Redis
    browser = await open_browser(node, "PHID-AWAY")
    admin = Admin(session, node.admin_addresses[0][1])
    await admin.post(notification("PHID-AWAY", unique_id="away-1"))
    assert (await browser.recv())["uniqueID"] == "away-1"
    broker = (await admin.status())["broker"]
    assert broker["state"] == "down"
    assert "Error 111 connecting" in broker["last_error"]
    assert broker["queue"] == 1
    await browser.close()


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted-ca", "unknown-ca"])
async def test_rediss_verifies_the_server_against_the_ca_file(
    start_node: StartNode, session: aiohttp.ClientSession, tmp_path: Any, trusted: bool
) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    redis = RedisServer(tmp_path / "redis", tls=(cert, key, ca_file)).start()
    try:
        node_ca = ca_file if trusted else tmp_path / "other-ca.pem"
        if not trusted:
            trustme.CA().cert_pem.write_to_path(str(node_ca))
        broker = {"url": redis.url, "ca_file": str(node_ca), **FAST}
        here, there = [await start_node(local_config(broker=broker)) for _ in range(2)]
        admin = Admin(session, here.admin_addresses[0][1])
        if trusted:
            remote = await open_browser(there, "PHID-TLS")
            await admin.post(notification("PHID-TLS", unique_id="tls-1"))
            assert (await remote.recv())["uniqueID"] == "tls-1"
            assert (await admin.status())["broker"]["state"] == "up"
            await remote.close()
        else:
            broker_status = (await admin.status())["broker"]
            assert broker_status["state"] == "down"
            assert "certificate verify failed" in broker_status["last_error"]
    finally:
        redis.stop()


async def test_a_reload_keeps_the_running_link_and_says_a_new_broker_needs_a_restart(
    redis_server: RedisServer, start_node: StartNode
) -> None:
    config = broker_config(redis_server)
    node = await start_node(config)
    moved = {
        **config,
        "broker": {"url": "redis://127.0.0.1:1/0"},
        "history": {"max_age_seconds": 30},
    }
    notes = await node.apply(parse_config(moved))
    assert notes == ["broker changed: it takes effect at the next start"]
    reading = node.snapshot().broker
    assert reading is not None
    assert reading.url == redis_server.url
    assert reading.state == "up"
