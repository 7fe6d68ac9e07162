"""Alerts from real relay processes to a webhook in the test: once per episode, signed, harmless.

Two broker-mode nodes watch a real replicating MariaDB pair; the webhook is
an aiohttp server of the test's own on port 0.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.cluster_status.helpers import host_entry
from tests.cluster_status.webhook import Receiver, metric, serve
from tests.harness import Cluster, Relays
from tests.mariadb_harness import MariaDBServer
from tests.redis_harness import RedisServer
from tests.support import eventually, notification

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

DATABASES = "relay.cluster.databases"
SECRET = "alert-S3CRET-7f2c"


@pytest.fixture
async def hanging(webhooks: list[web.AppRunner]) -> Receiver:
    return await serve(Receiver(hang=True), webhooks)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.secret"
    path.write_text(SECRET + "\n")
    return path


async def start_cluster(
    relays: Relays,
    redis: RedisServer,
    pair: tuple[MariaDBServer, MariaDBServer],
    url: str,
    secret_file: Path,
) -> Cluster:
    master, replica = pair
    cluster = relays.broker(
        2,
        {"url": redis.url, "timeout_seconds": 0.5, "connect_timeout_seconds": 0.5},
        cluster_status={
            "databases": [host_entry(master, "master"), host_entry(replica, "replica")],
            "database_interval_seconds": 0.1,
            "connect_timeout_seconds": 1,
            "query_timeout_seconds": 1,
            "repository": {"enabled": False},
            "lease_seconds": 1.0,
        },
        alerts={
            "url": url,
            "secret_file": str(secret_file),
            "timeout_seconds": 30,
            "interval_seconds": 0.1,
            "backoff_initial_seconds": 0.1,
        },
    )
    return await cluster.start()


def replica_is(message: dict[str, Any], replica: MariaDBServer, status: str) -> bool:
    entry = next(d for d in message["data"]["databases"] if d["port"] == replica.port)
    return bool(entry["replication"] and entry["replication"]["status"] == status)


async def test_one_signed_alert_when_replication_stops_and_one_when_it_recovers(
    relays: Relays,
    redis_server: RedisServer,
    pair: tuple[MariaDBServer, MariaDBServer],
    receiver: Receiver,
    session: aiohttp.ClientSession,
    secret_file: Path,
) -> None:
    replica = pair[1]
    cluster = await start_cluster(relays, redis_server, pair, receiver.url, secret_file)
    browser = await cluster[1].browser(DATABASES)
    seen: list[dict[str, Any]] = list(browser.pending)

    async def browser_sees(status: str) -> bool:
        seen.extend(await browser.drain())
        return bool(seen) and replica_is(seen[-1], replica, status)

    await eventually(lambda: browser_sees("okay"), "replication okay")
    assert receiver.alerts == []
    replica.stop_sql_thread()

    async def alerts(count: int) -> bool:
        return len(receiver.alerts) >= count

    await eventually(lambda: alerts(1), "an alert for the stopped replica")
    replica.start_sql_thread()
    await eventually(lambda: alerts(2), "an alert for its recovery")
    await eventually(lambda: browser_sees("okay"), "replication okay again")

    # Both nodes look every 0.1 s: had either sent more, it would be here by now.
    async def sent_total() -> bool:
        values = [await metric(session, node, "relay_alerts_sent_total") for node in cluster]
        return sum(values) == 2

    await eventually(sent_total, "the two alerts counted in /metrics")
    assert len(receiver.alerts) == 2
    bodies = []
    for headers, body in receiver.alerts:
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Relay-Signature"] == "sha256=" + expected
        bodies.append(orjson.loads(body))
    assert [(b["state"], b["kind"], b["subject"]) for b in bodies] == [
        ("firing", "replication-broken", f"127.0.0.1:{replica.port}"),
        ("resolved", "replication-broken", f"127.0.0.1:{replica.port}"),
    ]
    for node in cluster:
        assert SECRET not in node.log
    await browser.close()


async def test_a_webhook_that_never_answers_delays_nothing(
    relays: Relays,
    redis_server: RedisServer,
    pair: tuple[MariaDBServer, MariaDBServer],
    hanging: Receiver,
    session: aiohttp.ClientSession,
    secret_file: Path,
) -> None:
    replica = pair[1]
    cluster = await start_cluster(relays, redis_server, pair, hanging.url, secret_file)
    browsers = await cluster.browsers(DATABASES, "PHID-ALERT")
    seen: list[list[dict[str, Any]]] = [list(b.pending) for b in browsers]

    async def everyone_sees(status: str) -> bool:
        for index, browser in enumerate(browsers):
            seen[index] += [m for m in await browser.drain() if m.get("key") == DATABASES]
        return all(s and replica_is(s[-1], replica, status) for s in seen)

    await eventually(lambda: everyone_sees("okay"), "replication okay")
    replica.stop_sql_thread()
    await eventually(lambda: everyone_sees("not-replicating"), "the replica stopped")

    async def stuck() -> bool:
        return hanging.requests >= 1

    # The alert is in flight to a webhook that does not answer; posts still flow.
    await eventually(stuck, "the alert reaching the webhook")
    posted = time.monotonic()
    status, _ = await cluster[0].admin(session).post(notification("PHID-ALERT", unique_id="a-1"))
    assert status == 200
    for browser in browsers:
        while (await browser.recv()).get("uniqueID") != "a-1":
            pass
    assert time.monotonic() - posted < 2.0
    for node in cluster:
        assert await metric(session, node, "relay_alerts_sent_total") == 0
    replica.start_sql_thread()
    await eventually(lambda: everyone_sees("okay"), "replication running again")
    for browser in browsers:
        await browser.close()
