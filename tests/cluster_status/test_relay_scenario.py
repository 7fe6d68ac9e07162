"""The cluster-status module through a real relay node: browsers and the JSON endpoint.

What the module observes must reach a browser subscribed with the ordinary
``subscribe`` command (current state at once, then one message per change)
and ``GET /cluster-status/`` on the admin port; never a password.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from relay.node.node import Node
from tests.cluster_status.helpers import MONITOR_PASSWORD, MONITOR_USER, NOPRIV_USER, host_entry
from tests.cluster_status.phorge_tables import PhorgeTables
from tests.mariadb_harness import MariaDBServer, make_lagging
from tests.support import WAIT, Admin, Browser, eventually, free_ports, local_config

StartNode = Callable[..., Awaitable[Node]]
DATABASES = "relay.cluster.databases"
REPOSITORIES = "relay.cluster.repositories"


def status_config(databases: list[dict[str, Any]], **section: Any) -> dict[str, Any]:
    cluster_status: dict[str, Any] = {
        "databases": databases,
        "database_interval_seconds": 0.05,
        "repository_interval_seconds": 0.1,
        "connect_timeout_seconds": 1,
        "query_timeout_seconds": 1,
        "repository": {"enabled": False},
    }
    cluster_status.update(section)
    return local_config(cluster_status=cluster_status)


class Observer:
    """A browser subscribed to the status keys, plus the node's JSON endpoint."""

    def __init__(self, browser: Browser, admin: Admin) -> None:
        self.browser = browser
        self.admin = admin
        self.messages: list[dict[str, Any]] = []

    @classmethod
    async def attach(cls, node: Node, session: aiohttp.ClientSession) -> Observer:
        browser = await Browser.open(node.client_addresses[0][1])
        await browser.send("subscribe", [DATABASES, REPOSITORIES])
        return cls(browser, Admin(session, node.admin_addresses[0][1]))

    async def endpoint(self) -> dict[str, Any]:
        async with self.admin.session.get(self.admin.base + "/cluster-status/") as response:
            assert response.status == 200
            return await response.json()  # type: ignore[no-any-return]

    async def until(self, key: str, check: Callable[[dict[str, Any]], bool], what: str) -> Any:
        """Wait for a browser message on ``key`` whose data passes ``check``; return the data."""
        found: list[dict[str, Any]] = []

        async def arrived() -> bool:
            self.messages += await self.browser.drain()
            found[:] = [m for m in self.messages if m["key"] == key and check(m["data"])]
            return bool(found)

        await eventually(arrived, what)
        return found[-1]["data"]


def state_of(data: dict[str, Any], server: MariaDBServer) -> tuple[Any, Any]:
    entry = next(d for d in data["databases"] if d["port"] == server.port)
    return (
        entry["connection"] and entry["connection"]["status"],
        entry["replication"] and entry["replication"]["status"],
    )


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize(
    ("roles", "options", "expected"),
    [
        (("master", "replica"), {}, [("okay", "okay"), ("okay", "okay")]),
        (("replica", "master"), {}, [("okay", "replica-none"), ("okay", "master-replica")]),
        (("master", "replica"), {"password": "wrong"}, [("auth", None), ("auth", None)]),
        (
            ("master", "replica"),
            {"user": NOPRIV_USER},
            [("replication-client", None), ("replication-client", None)],
        ),
    ],
    ids=["okay", "roles-swapped", "wrong-password", "no-privilege"],
)
async def test_each_state_reaches_the_browser_and_the_endpoint(
    shared_pair: tuple[MariaDBServer, MariaDBServer],
    start_node: StartNode,
    session: aiohttp.ClientSession,
    roles: tuple[str, str],
    options: dict[str, Any],
    expected: list[tuple[str, str | None]],
) -> None:
    servers = shared_pair
    entries = [
        host_entry(server, role, **options) for server, role in zip(servers, roles, strict=True)
    ]
    node = await start_node(status_config(entries))
    observer = await Observer.attach(node, session)

    def settled(data: dict[str, Any]) -> bool:
        return [state_of(data, server) for server in servers] == expected

    await observer.until(DATABASES, settled, f"the browser sees {expected}")
    assert settled(await observer.endpoint())


async def test_nothing_listening_is_fail(
    start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    dead = {"host": "127.0.0.1", "port": free_ports(1)[0], "role": "master", "pass": "x"}
    node = await start_node(status_config([dead]))
    observer = await Observer.attach(node, session)

    def failed(data: dict[str, Any]) -> bool:
        return bool(data["databases"][0]["connection"]["status"] == "fail")

    await observer.until(DATABASES, failed, "the browser sees fail")
    assert failed(await observer.endpoint())


async def test_replication_breaking_lagging_and_the_master_dying(
    pair: tuple[MariaDBServer, MariaDBServer],
    start_node: StartNode,
    session: aiohttp.ClientSession,
) -> None:
    master, replica = pair
    entries = [host_entry(master, "master"), host_entry(replica, "replica")]
    node = await start_node(status_config(entries))
    observer = await Observer.attach(node, session)

    def replica_is(status: str) -> Callable[[dict[str, Any]], bool]:
        return lambda data: state_of(data, replica)[1] == status

    await observer.until(DATABASES, replica_is("okay"), "replication okay")
    replica.stop_sql_thread()
    await observer.until(DATABASES, replica_is("not-replicating"), "SQL thread stopped")
    assert replica_is("not-replicating")(await observer.endpoint())
    replica.start_sql_thread()
    await observer.until(DATABASES, replica_is("okay"), "replication restarted")
    make_lagging(master, replica, 45)
    await observer.until(DATABASES, replica_is("replica-slow"), "a replica 45 s behind")
    assert replica_is("replica-slow")(await observer.endpoint())

    def master_health(healthy: bool, mode: str) -> Callable[[dict[str, Any]], bool]:
        def check(data: dict[str, Any]) -> bool:
            entry = next(d for d in data["databases"] if d["port"] == master.port)
            return bool(entry["health"]["healthy"] == healthy and data["mode"] == mode)

        return check

    await observer.until(DATABASES, master_health(True, "read-write"), "a healthy master")
    master.kill()
    await observer.until(DATABASES, master_health(False, "read-only"), "the master unhealthy")
    assert (await observer.endpoint())["mode"] == "read-only"
    master.restart()
    await observer.until(DATABASES, master_health(True, "read-write"), "the master back")


async def test_repository_changes_are_pushed_and_late_subscribers_get_the_state(
    phorge: PhorgeTables, start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    repository, devices = phorge.synchronized_service("repos001", "Demo")
    source = {
        "host": "127.0.0.1",
        "port": phorge.server.port,
        "user": MONITOR_USER,
        "pass": MONITOR_PASSWORD,
    }
    node = await start_node(
        status_config([], repository=source, namespace=phorge.ns, repository_interval_seconds=0.2)
    )
    observer = await Observer.attach(node, session)

    def verdict(expected: str) -> Callable[[dict[str, Any]], bool]:
        return lambda data: bool(data["available"] and data["services"][0]["verdict"] == expected)

    await observer.until(REPOSITORIES, verdict("Synchronized"), "a synchronized service")
    # An old push reached only one device: unreplicated changes, data at risk.
    newer = phorge.push(repository, epoch=int(time.time()) - 3600)
    phorge.set_version(repository, devices[0], newer)
    pushed_at = time.monotonic()
    await observer.until(REPOSITORIES, verdict("Unsynchronized"), "the service out of sync")
    assert time.monotonic() - pushed_at < WAIT
    endpoint = await observer.endpoint()
    assert endpoint["repositories"]["services"][0]["verdict"] == "Unsynchronized"

    # A browser subscribing now gets the current state at once.
    late = await Browser.open(node.client_addresses[0][1])
    await late.send("subscribe", [REPOSITORIES])
    first = await late.recv()
    assert first["data"]["services"][0]["verdict"] == "Unsynchronized"

    # Unchanged polls send nothing: let several polls pass, then look.
    updated = (await observer.endpoint())["repositories"]["updated"]

    async def three_more_polls() -> bool:
        return bool((await observer.endpoint())["repositories"]["updated"] >= updated + 0.6)

    await eventually(three_more_polls, "three more polls of the tables")
    assert await late.drain() == []
    await late.close()


async def test_no_password_anywhere(
    pair: tuple[MariaDBServer, MariaDBServer],
    start_node: StartNode,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    master, replica = pair
    entries = [
        host_entry(master, "master"),
        host_entry(replica, "replica", password=MONITOR_PASSWORD + "-wrong"),
    ]
    with caplog.at_level(logging.DEBUG, logger="relay"):
        node = await start_node(status_config(entries))
        observer = await Observer.attach(node, session)

        def both_checked(data: dict[str, Any]) -> bool:
            return all(d["connection"] for d in data["databases"])

        await observer.until(DATABASES, both_checked, "both hosts checked")
        master.kill()
        await observer.until(
            DATABASES, lambda data: data["mode"] == "read-only", "the master unhealthy"
        )
        async with session.get(observer.admin.base + "/metrics") as response:
            metrics = await response.text()
        status = await observer.admin.status()
        endpoint = await observer.endpoint()
    everything = [
        caplog.text,
        orjson.dumps(observer.messages).decode(),
        orjson.dumps(endpoint).decode(),
        orjson.dumps(status).decode(),
        metrics,
        repr(node.config),
    ]
    for text in everything:
        assert MONITOR_PASSWORD not in text
    assert "relay_cluster_read_only 1.0" in metrics
