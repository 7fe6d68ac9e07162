"""An outage of Redis longer than the lease, from real relay processes: one start and one end.

Three broker-mode nodes on a real redis-server, the cluster-status lease on
one real MariaDB server; the webhook is an aiohttp server of the test's
own. Redis is killed until the holder's lease runs out, then started again
empty while the old holder is paused (SIGSTOP), so another node takes the
lease: both the old holder and the new one followed the outage.
"""

from __future__ import annotations

import signal
from typing import Any

import aiohttp
import orjson
import pytest

from tests.cluster_status.conftest import add_monitor_users
from tests.cluster_status.helpers import host_entry
from tests.cluster_status.webhook import Receiver, metric
from tests.harness import Cluster, Relays
from tests.mariadb_harness import MariaDBFactory
from tests.redis_harness import RedisServer
from tests.support import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def broker_lost(receiver: Receiver) -> list[tuple[str, str]]:
    """The ``broker-lost`` alerts received so far: (state, sending node's fingerprint)."""
    alerts = [orjson.loads(body) for _, body in receiver.alerts]
    return [(a["state"], a["node"]) for a in alerts if a["kind"] == "broker-lost"]


async def status(session: aiohttp.ClientSession, node: Any, path: str = "/status/") -> Any:
    async with session.get(node.admin_url + path) as response:
        return await response.json()


async def holds(session: aiohttp.ClientSession, node: Any) -> bool:
    return bool((await status(session, node, "/cluster-status/"))["lease"]["holder"])


async def broker_state(session: aiohttp.ClientSession, node: Any) -> str:
    return str((await status(session, node))["broker"]["state"])


async def start_cluster(
    relays: Relays, redis_server: RedisServer, mariadb: MariaDBFactory, receiver: Receiver
) -> Cluster:
    database = mariadb.start("db", server_id=1)
    add_monitor_users(database)
    return await relays.broker(
        3,
        {
            "url": redis_server.url,
            "timeout_seconds": 0.3,
            "connect_timeout_seconds": 0.3,
            "backoff_initial_seconds": 0.05,
            "backoff_max_seconds": 0.2,
        },
        cluster_status={
            "databases": [host_entry(database, "master")],
            "database_interval_seconds": 0.2,
            "repository": {"enabled": False},
            "lease_seconds": 1.0,
        },
        alerts={"url": receiver.url, "interval_seconds": 0.1, "backoff_initial_seconds": 0.1},
    ).start()


async def test_an_outage_longer_than_the_lease_is_one_start_and_one_end_from_one_node(
    relays: Relays,
    redis_server: RedisServer,
    mariadb: MariaDBFactory,
    receiver: Receiver,
    session: aiohttp.ClientSession,
) -> None:
    cluster = await start_cluster(relays, redis_server, mariadb, receiver)

    async def holders() -> list[int]:
        return [i for i, node in enumerate(cluster) if await holds(session, node)]

    async def one_holder() -> bool:
        return len(await holders()) == 1

    await eventually(one_holder, "one node holds the lease")
    [old] = await holders()
    others = [i for i in range(3) if i != old]
    fingerprints = [(await status(session, node))["fingerprint"] for node in cluster]

    redis_server.kill()
    await eventually(
        lambda: _true(len(broker_lost(receiver)) == 1), "the outage told by the holder"
    )

    async def lapsed_and_seen() -> bool:
        states = [await broker_state(session, node) for node in cluster]
        return not await holds(session, cluster[old]) and states == ["down"] * 3

    await eventually(lapsed_and_seen, "the holder's lease ran out, every node sees Redis down")

    # Paused while Redis comes back (empty), the old holder leaves the lease to another.
    cluster[old].signal(signal.SIGSTOP)
    try:
        redis_server.start()

        async def another_holds_and_is_up() -> bool:
            for node in (cluster[i] for i in others):
                if await holds(session, node) and await broker_state(session, node) == "up":
                    return True
            return False

        await eventually(another_holds_and_is_up, "another node holds the lease, Redis up to it")
    finally:
        cluster[old].signal(signal.SIGCONT)

    async def all_up() -> bool:
        return [await broker_state(session, node) for node in cluster] == ["up"] * 3

    await eventually(all_up, "every node's link to Redis is up again")
    await eventually(
        lambda: _true(any(state == "resolved" for state, _ in broker_lost(receiver))),
        "the end of the outage told",
    )

    # Every node looks every 0.1 s: a second sender would have been counted by now.
    async def counted() -> bool:
        values = [await metric(session, node, "relay_alerts_sent_total") for node in cluster]
        return sum(values) == len(receiver.alerts)

    await eventually(counted, "the alerts counted in /metrics")
    assert broker_lost(receiver) == [
        ("firing", fingerprints[old]),
        ("resolved", fingerprints[old]),
    ]


async def _true(value: bool) -> bool:
    return value
