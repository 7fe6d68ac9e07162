"""Payloads, fingerprints and the publisher that sends only on change."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

from relay.cluster_status.verdicts.connection import ConnectionVerdict
from relay.cluster_status.verdicts.databases import HostState, ModeVerdict
from relay.cluster_status.verdicts.events import (
    DATABASES_TYPE,
    Publisher,
    database_fingerprint,
    database_payload,
    repository_fingerprint,
    repository_payload,
)
from relay.cluster_status.verdicts.replication import ReplicationVerdict
from relay.cluster_status.verdicts.repositories import compute_repository_sync
from relay.cluster_status.verdicts.repository_rows import (
    BindingRow,
    ClusterRows,
    DeviceRow,
    PushEventRow,
    RepositoryRow,
    ServiceRow,
    VersionRow,
)

NOW = 1_700_000_000.0


def replica(delay: int | None = 0, latency: float = 0.002, **kwargs: object) -> HostState:
    return HostState(
        label="db2:3306",
        host="db2",
        port=3306,
        role="replica",
        connection=ConnectionVerdict("okay"),
        replication=ReplicationVerdict("okay", delay, None, "db1"),
        latency=latency,
        up=5,
        checked_at=NOW,
        **kwargs,  # type: ignore[arg-type]
    )


def test_publisher_sends_the_first_state_then_only_changes() -> None:
    counter = itertools.count()
    publisher = Publisher("key", "type", unique_id=lambda: f"id{next(counter)}")
    first = publisher.offer({"v": 1}, ("a",))
    assert first is not None
    assert first["uniqueID"] == "id0"
    assert publisher.offer({"v": 2}, ("a",)) is None  # same fingerprint
    second = publisher.offer({"v": 3}, ("b",))
    assert second is not None
    assert second["uniqueID"] == "id1"
    assert second["data"] == {"v": 3}


def test_database_payload_is_json_and_complete() -> None:
    hosts = [replica(delay=4, latency=0.0123)]
    data = database_payload(
        hosts,
        ModeVerdict("read-only", "no master is configured"),
        instance="acme",
        observer="node1",
        updated=NOW,
    )
    assert json.loads(json.dumps(data)) == data
    assert data["mode"] == "read-only"
    assert data["modeReason"] == "no master is configured"
    (entry,) = data["databases"]
    assert entry["ref"] == "db2:3306"
    assert entry["connection"] == {"status": "okay", "message": None, "latencyMs": 12.3}
    assert entry["replication"] == {
        "status": "okay",
        "delay": 4,
        "message": None,
        "masterHost": "db1",
    }
    assert entry["health"]["up"] == 5
    unchecked = database_payload(
        [HostState("x:1", "x", 1, "master", disabled=True)],
        ModeVerdict("read-only"),
        instance="i",
        observer="o",
        updated=0,
    )
    assert unchecked["databases"][0]["connection"] is None
    assert unchecked["databases"][0]["replication"] is None


def test_database_fingerprint_ignores_latency_and_small_delay_moves() -> None:
    mode = ModeVerdict("read-write")
    base = database_fingerprint([replica(delay=0, latency=0.001)], mode)
    assert database_fingerprint([replica(delay=1, latency=0.9)], mode) == base
    assert database_fingerprint([replica(delay=2)], mode) != base  # now worth showing
    behind = database_fingerprint([replica(delay=5)], mode)
    assert database_fingerprint([replica(delay=29)], mode) == behind
    assert database_fingerprint([replica(delay=31)], mode) != behind  # slow
    assert database_fingerprint([replica(healthy=False)], mode) != base
    assert database_fingerprint([replica()], ModeVerdict("read-only")) != base
    failing = replace(replica(), connection=ConnectionVerdict("fail", "x"), replication=None)
    assert database_fingerprint([failing], mode) != base


def sync_rows(follower_version: int, *, writing: bool = False) -> ClusterRows:
    return ClusterRows(
        repositories=(RepositoryRow(1, "R", "app", "APP", "git", "S"),),
        versions=(
            VersionRow("R", "D1", 5, writing, '{"epoch": 1699999990}' if writing else None, None),
            VersionRow("R", "D2", follower_version, False),
        ),
        push_events=(PushEventRow(5, "R", int(NOW - 100)),),
        services=(ServiceRow("S", "repos", "cluster.repository"),),
        bindings=(BindingRow("S", "D1", False), BindingRow("S", "D2", False)),
        devices=(DeviceRow("D1", "one"), DeviceRow("D2", "two")),
    )


def test_repository_payload_and_fingerprint() -> None:
    state = compute_repository_sync(sync_rows(4), now=NOW, write_interruption_seconds=300)
    data = repository_payload(
        state, source="db:3306", error=None, instance="default", observer="n", updated=NOW
    )
    assert json.loads(json.dumps(data)) == data
    (service,) = data["services"]
    assert (service["verdict"], service["lag"]) == ("Partial", 100.0)
    (repo,) = service["repositories"]
    assert repo["leaders"] == ["one"]
    assert repo["followers"] == [{"device": "two", "version": 4}]
    assert repo["writeLock"] is None
    # Lag grows every poll; the fingerprint must not.
    later = compute_repository_sync(sync_rows(4), now=NOW + 30, write_interruption_seconds=300)
    assert repository_fingerprint(later, None) == repository_fingerprint(state, None)
    caught_up = compute_repository_sync(sync_rows(5), now=NOW, write_interruption_seconds=300)
    assert repository_fingerprint(caught_up, None) != repository_fingerprint(state, None)
    locked = compute_repository_sync(
        sync_rows(4, writing=True), now=NOW, write_interruption_seconds=300
    )
    lock = repository_payload(
        locked, source=None, error=None, instance="d", observer="n", updated=NOW
    )["services"][0]["repositories"][0]["writeLock"]
    assert lock["device"] == "one"
    assert lock["since"] == 1699999990
    assert repository_fingerprint(locked, None) != repository_fingerprint(state, None)


def test_unavailable_repository_state() -> None:
    data = repository_payload(
        None, source="db:3306", error="#1146 no table", instance="d", observer="n", updated=NOW
    )
    assert (data["available"], data["error"], data["services"]) == (False, "#1146 no table", [])
    assert repository_fingerprint(None, "a") != repository_fingerprint(None, "b")
    assert repository_fingerprint(None, "a") == repository_fingerprint(None, "a")


def test_database_type_constant() -> None:
    assert DATABASES_TYPE == "relay.cluster.databases"


def test_database_fingerprint_follows_the_cause_but_not_the_exact_delay() -> None:
    mode = ModeVerdict("read-write")

    def stopped(message: str) -> HostState:
        return replace(replica(), replication=ReplicationVerdict("not-replicating", None, message))

    paused = database_fingerprint([stopped("IO thread: Yes, SQL thread: No")], mode)
    assert database_fingerprint([stopped("IO thread: Yes, SQL thread: No")], mode) == paused
    assert database_fingerprint([stopped("IO thread: Connecting, SQL thread: No")], mode) != paused

    def slow(delay: int) -> HostState:
        verdict = ReplicationVerdict("replica-slow", delay, f"{delay} s behind the master")
        return replace(replica(), replication=verdict)

    assert database_fingerprint([slow(40)], mode) == database_fingerprint([slow(41)], mode)
    refused = replace(replica(), connection=ConnectionVerdict("fail", "refused"), replication=None)
    timed_out = replace(refused, connection=ConnectionVerdict("fail", "timed out"))
    assert database_fingerprint([refused], mode) != database_fingerprint([timed_out], mode)
