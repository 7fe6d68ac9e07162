"""Broker mode: the cluster-status checks run on one node per cluster, and move when it dies.

Three relay processes meet in a real redis-server and watch a real
replicating MariaDB pair. Each node connects as a user of its own, so the
servers' own per-user statistics (``information_schema.USER_STATISTICS``)
say which nodes query them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from tests.cluster_status.helpers import MONITOR_PASSWORD, MONITOR_PRIVILEGES, host_entry
from tests.harness import Cluster, Relays
from tests.mariadb_harness import MariaDBServer
from tests.redis_harness import RedisServer
from tests.support import Browser, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

DATABASES = "relay.cluster.databases"
LEASE_SECONDS = 1.0
#: The documented bound (4/3 of the lease), plus room for a loaded machine.
TAKEOVER_BOUND = LEASE_SECONDS * 4 / 3 + 2.0
BROKER = {
    "timeout_seconds": 0.5,
    "connect_timeout_seconds": 0.5,
    "ping_interval_seconds": 0.25,
    "stale_seconds": 1.5,
    "backoff_initial_seconds": 0.05,
    "backoff_max_seconds": 0.5,
}


def node_user(index: int) -> str:
    return f"relay_node{index}"


def connections(server: MariaDBServer) -> dict[str, int]:
    """Connections each node's user has made to ``server`` so far."""
    rows = server.sql("SELECT USER, TOTAL_CONNECTIONS FROM information_schema.USER_STATISTICS")
    return {str(row["USER"]): int(row["TOTAL_CONNECTIONS"]) for row in rows}


def made_since(server: MariaDBServer, before: dict[str, int], index: int) -> int:
    return connections(server).get(node_user(index), 0) - before.get(node_user(index), 0)


def watching(
    relays: Relays,
    redis: RedisServer,
    master: MariaDBServer,
    replica: MariaDBServer,
    size: int = 3,
    lease_seconds: float = LEASE_SECONDS,
) -> Cluster:
    """``size`` nodes (not started) that watch the pair, each as a database user of its own."""
    for server in (master, replica):
        server.sql("SET GLOBAL userstat = 1")
        for index in range(size):
            server.create_user(node_user(index), MONITOR_PASSWORD, MONITOR_PRIVILEGES)
    cluster = relays.broker(size, {"url": redis.url, **BROKER})
    for index, node in enumerate(cluster):
        user = node_user(index)
        node.config["cluster_status"] = {
            "databases": [
                host_entry(master, "master", user=user),
                host_entry(replica, "replica", user=user),
            ],
            "database_interval_seconds": 0.1,
            "connect_timeout_seconds": 1,
            "query_timeout_seconds": 1,
            "repository": {"enabled": False},
            "lease_seconds": lease_seconds,
        }
    return cluster


async def holders(cluster: Cluster, session: aiohttp.ClientSession, alive: list[int]) -> list[int]:
    """The nodes among ``alive`` whose ``/cluster-status/`` says they hold the lease."""
    found = []
    for index in alive:
        async with session.get(cluster[index].admin_url + "/cluster-status/") as response:
            body = await response.json()
        if body["lease"]["holder"]:
            found.append(index)
    return found


def replica_status(message: dict[str, Any], replica: MariaDBServer) -> str | None:
    entry = next(d for d in message["data"]["databases"] if d["port"] == replica.port)
    replication = entry["replication"]
    return None if replication is None else str(replication["status"])


class Watcher:
    """A browser on one node and every status message it got."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.messages: list[dict[str, Any]] = list(browser.pending)

    async def take(self) -> list[dict[str, Any]]:
        fresh = [m for m in await self.browser.drain() if m.get("key") == DATABASES]
        self.messages += fresh
        return fresh


async def everyone_sees(watchers: list[Watcher], replica: MariaDBServer, status: str) -> bool:
    """Whether every watcher's last status message reports the replica in ``status``."""
    for watcher in watchers:
        await watcher.take()
    return all(w.messages and replica_status(w.messages[-1], replica) == status for w in watchers)


async def watched_and_okay(
    relays: Relays, redis: RedisServer, master: MariaDBServer, replica: MariaDBServer
) -> tuple[Cluster, list[Watcher]]:
    """Three nodes watching the pair, each with a browser that has seen replication okay."""
    cluster = await watching(relays, redis, master, replica).start()
    watchers = [Watcher(await node.browser(DATABASES)) for node in cluster]
    await eventually(
        lambda: everyone_sees(watchers, replica, "okay"), "every browser sees replication okay"
    )
    return cluster, watchers


async def test_one_node_checks_and_another_takes_over_when_it_is_killed(
    relays: Relays,
    redis_server: RedisServer,
    pair: tuple[MariaDBServer, MariaDBServer],
    session: aiohttp.ClientSession,
) -> None:
    master, replica = pair
    cluster, watchers = await watched_and_okay(relays, redis_server, master, replica)
    alive = [0, 1, 2]
    [holder] = await holders(cluster, session, alive)

    # Only the holder connects, to either server, while ten rounds pass.
    before = {server.port: connections(server) for server in (master, replica)}

    async def ten_rounds() -> bool:
        return made_since(master, before[master.port], holder) >= 10

    await eventually(ten_rounds, "the holder checks the master ten times")
    for server in (master, replica):
        for index in alive:
            if index != holder:
                assert made_since(server, before[server.port], index) == 0, (index, server.name)

    # SIGKILL: it cannot hand the lease over; another takes it when it runs out.
    cluster[holder].kill()
    killed_at = time.monotonic()
    alive.remove(holder)
    watchers.pop(holder)
    taken: list[int] = []

    async def taken_over() -> bool:
        taken[:] = await holders(cluster, session, alive)
        return len(taken) == 1

    await eventually(taken_over, "another node holds the lease")
    assert time.monotonic() - killed_at < TAKEOVER_BOUND
    [successor] = taken
    before = {server.port: connections(server) for server in (master, replica)}

    async def successor_checks() -> bool:
        return made_since(master, before[master.port], successor) >= 10

    await eventually(successor_checks, "the new holder checks the master ten times")
    [bystander] = [index for index in alive if index != successor]
    assert made_since(master, before[master.port], bystander) == 0
    # The new holder started from the published state: nothing was announced again.
    for watcher in watchers:
        assert await watcher.take() == []

    # Each change reaches every remaining browser once.
    replica.stop_sql_thread()
    await eventually(
        lambda: everyone_sees(watchers, replica, "not-replicating"), "the SQL thread stopped"
    )
    replica.start_sql_thread()
    await eventually(lambda: everyone_sees(watchers, replica, "okay"), "replication running again")
    for watcher in watchers:
        await watcher.take()
    sequences = [[m["uniqueID"] for m in w.messages] for w in watchers]
    assert sequences[0] == sequences[1]
    assert len(set(sequences[0])) == len(sequences[0])
    statuses = [replica_status(m, replica) for m in watchers[0].messages]
    assert statuses.count("not-replicating") == 1
    for watcher in watchers:
        await watcher.browser.close()


async def test_a_redis_that_restarts_empty_does_not_silence_the_status(
    relays: Relays,
    redis_server: RedisServer,
    pair: tuple[MariaDBServer, MariaDBServer],
    session: aiohttp.ClientSession,
) -> None:
    """A broker without persistence loses the lease's token counter; browsers still hear news."""
    master, replica = pair
    cluster, watchers = await watched_and_okay(relays, redis_server, master, replica)
    # A graceful stop hands the lease on: every node has now seen a second, larger token.
    alive = [0, 1, 2]
    [holder] = await holders(cluster, session, alive)
    cluster[holder].stop()
    alive.remove(holder)
    watchers.pop(holder)

    async def taken_over() -> bool:
        return len(await holders(cluster, session, alive)) == 1

    await eventually(taken_over, "another node holds the lease")

    # Redis restarts with none of its data, as a broker without persistence does.
    redis_server.kill()
    redis_server.start()
    await eventually(taken_over, "a node holds the lease in the new Redis")
    replica.stop_sql_thread()
    await eventually(
        lambda: everyone_sees(watchers, replica, "not-replicating"),
        "every remaining browser sees the SQL thread stopped",
    )
    for watcher in watchers:
        # Each state once: the holder in the new Redis publishes the last verdict
        # again, and a node that has it already does not announce it again.
        await watcher.take()
        statuses = [replica_status(m, replica) for m in watcher.messages]
        assert statuses == ["okay", "not-replicating"], statuses
        await watcher.browser.close()


async def lease_of(cluster: Cluster, session: aiohttp.ClientSession, index: int) -> Any:
    """What node ``index``'s ``/cluster-status/`` says of the lease: holder and token."""
    async with session.get(cluster[index].admin_url + "/cluster-status/") as response:
        return (await response.json())["lease"]


async def test_a_change_seen_while_redis_was_away_reaches_the_nodes_that_come_after(
    relays: Relays,
    redis_server: RedisServer,
    pair: tuple[MariaDBServer, MariaDBServer],
    session: aiohttp.ClientSession,
) -> None:
    """The holder checks on while Redis is away, until its lease lapses; what it saw then counts.

    It announces a change to its own browsers at once, but cannot publish it;
    taking the lease again once Redis is back, it used to start from that
    change as if published, so Redis, and every other node, never had it.
    """
    master, replica = pair
    cluster = watching(relays, redis_server, master, replica, size=2, lease_seconds=3.0)
    await asyncio.to_thread(cluster[0].start)
    first = Watcher(await cluster[0].browser(DATABASES))
    await eventually(lambda: everyone_sees([first], replica, "okay"), "the holder sees okay")
    before = await lease_of(cluster, session, 0)
    assert before["holder"]

    redis_server.kill()
    replica.stop_sql_thread()
    # Seen before Redis is back, so by the holder's checks under its lease (the
    # checks stop when it lapses), while nothing could be published.
    await eventually(
        lambda: everyone_sees([first], replica, "not-replicating"), "the holder sees the change"
    )
    redis_server.start()  # back, and empty

    async def holds_again() -> bool:
        lease = await lease_of(cluster, session, 0)
        return bool(lease["holder"]) and lease["token"] != before["token"]

    await eventually(holds_again, "the first node takes the lease in the new Redis")
    await asyncio.to_thread(cluster[1].start)
    second = Watcher(await cluster[1].browser(DATABASES))
    await eventually(
        lambda: everyone_sees([second], replica, "not-replicating"),
        "a node started after Redis came back hears the change",
    )
    assert not (await lease_of(cluster, session, 1))["holder"]  # heard, not checked itself
    await first.take()
    statuses = [replica_status(m, replica) for m in first.messages]
    assert statuses == ["okay", "not-replicating"]  # each once: not again when republished
    for watcher in (first, second):
        await watcher.browser.close()
