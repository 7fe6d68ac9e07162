"""Node alerts from real relay processes: a node killed is one signed alert, its return another.

Three broker-mode nodes on a real redis-server, the cluster-status lease
held by one of them (they watch one real MariaDB server); the webhook is an
aiohttp server of the test's own. A node is known by its host and admin
port, which a restart keeps.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cluster_status.conftest import add_monitor_users
from tests.cluster_status.helpers import host_entry
from tests.cluster_status.webhook import Receiver, metric, signed_alerts
from tests.harness import Cluster, Relays
from tests.mariadb_harness import MariaDBFactory
from tests.redis_harness import RedisServer
from tests.support import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SECRET = "alert-S3CRET-91ab"
INTERVAL = 0.5


def node_alerts(receiver: Receiver, kind: str) -> list[dict[str, Any]]:
    """The alerts of ``kind`` received so far, each checked for its signature."""
    return signed_alerts(receiver, SECRET, kind)


async def start_cluster(
    relays: Relays,
    redis_server: RedisServer,
    mariadb: MariaDBFactory,
    receiver: Receiver,
    tmp_path: Path,
) -> Cluster:
    """Three broker-mode nodes alerting to ``receiver``, the lease on one real MariaDB."""
    database = mariadb.start("db", server_id=1)
    add_monitor_users(database)
    secret_file = tmp_path / "alerts.secret"
    secret_file.write_text(SECRET + "\n")
    cluster = await relays.broker(
        3,
        {"url": redis_server.url, "timeout_seconds": 0.5, "presence_interval_seconds": INTERVAL},
        cluster_status={
            "databases": [host_entry(database, "master")],
            "database_interval_seconds": 0.2,
            "repository": {"enabled": False},
            "lease_seconds": 1.0,
        },
        alerts={
            "url": receiver.url,
            "secret_file": str(secret_file),
            "interval_seconds": 0.1,
            "backoff_initial_seconds": 0.1,
        },
    ).start()
    return cluster


async def test_a_killed_node_is_one_alert_and_its_restart_ends_the_episode(
    relays: Relays,
    redis_server: RedisServer,
    mariadb: MariaDBFactory,
    receiver: Receiver,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    cluster = await start_cluster(relays, redis_server, mariadb, receiver, tmp_path)
    admins = cluster.admins(session)

    async def everyone_listed() -> bool:
        for admin in admins:
            members = (await admin.status())["nodes"]["members"]
            if len({m["place"] for m in members if m["state"] == "fresh"}) != 3:
                return False
        return True

    await eventually(everyone_listed, "every node lists three fresh nodes")
    joined = len(node_alerts(receiver, "node-joined"))
    assert node_alerts(receiver, "node-left") == []
    place = f"{socket.gethostname()}:{cluster[2].admin_port}"
    cluster[2].kill()

    async def alerted(count: int) -> bool:
        return len(node_alerts(receiver, "node-left")) >= count

    await eventually(lambda: alerted(1), "an alert for the node killed")
    await cluster.start(2)
    await eventually(lambda: alerted(2), "an alert for its return")

    # Every node looks every 0.1 s: a second sender would have been counted by now.
    async def counted() -> bool:
        values = [await metric(session, node, "relay_alerts_sent_total") for node in cluster]
        return sum(values) == len(receiver.alerts)

    await eventually(counted, "the alerts counted in /metrics")
    left = node_alerts(receiver, "node-left")
    assert [(a["state"], a["subject"], a["key"]) for a in left] == [
        ("firing", place, f"node-left:{place}"),
        ("resolved", place, f"node-left:{place}"),
    ]
    assert left[0]["summary"] == f"node {place} left the cluster"
    assert left[0]["since"] == left[1]["since"]
    # A node coming back did not join: it was known.
    assert len(node_alerts(receiver, "node-joined")) == joined
    logs = [node.log for node in cluster]
    warned = [log for log in logs if f"alert firing: node {place} left the cluster" in log]
    assert len(warned) == 1
    assert all(SECRET not in log for log in logs)
