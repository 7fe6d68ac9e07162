"""Alerts' pure core: problems in a snapshot, episodes on a fake clock, body and signature."""

from __future__ import annotations

import hashlib
import hmac

import orjson

from relay.core.alerts import (
    AlertTracker,
    Problem,
    alert_body,
    problems,
    signature,
    undecided,
)
from relay.core.cluster_reading import (
    ClusterStatusReading,
    DatabaseReading,
    HealthReading,
    ReplicationReading,
    RepositoriesReading,
    ServiceReading,
)
from relay.core.snapshot import BrokerReading, NodeSnapshot
from tests.support import FakeClock


def snapshot(status: ClusterStatusReading | None, broker: str | None = None) -> NodeSnapshot:
    reading = None
    if broker is not None:
        reading = BrokerReading("redis://r:6379/0", broker, 1.0, None, 0, 0, 0, 0, 0, 0)
    return NodeSnapshot("fp", 0, 0, {}, 0, {}, [], status, broker=reading)


def database(ref: str, *, healthy: bool = True, replication: str | None = None) -> DatabaseReading:
    return DatabaseReading(
        ref,
        ref.split(":")[0],
        3306,
        "replica",
        ref == "db4:3306",
        None,
        None,
        None if replication is None else ReplicationReading(replication, None, None, None),
        HealthReading(healthy, 0, 5, 5, None, None),
    )


def cluster_status(
    databases: tuple[DatabaseReading, ...],
    repositories: RepositoriesReading,
    *,
    mode: str = "read-write",
    mode_reason: str | None = None,
) -> ClusterStatusReading:
    return ClusterStatusReading(
        instance="default",
        observer="h",
        databases_key="d",
        repositories_key="r",
        mode=mode,
        mode_reason=mode_reason,
        databases=databases,
        repositories=repositories,
    )


def test_problems_name_each_thing_wrong() -> None:
    service = ServiceReading("S", "repo", False, (), (), "Unsynchronized", None, (), ())
    status = cluster_status(
        (
            database("db1:3306", healthy=False),
            database("db2:3306", replication="okay"),
            database("db3:3306", replication="not-replicating"),
            database("db4:3306", healthy=False),
        ),
        RepositoriesReading("default", "h", 0.0, None, None, True, (service,)),
        mode="read-only",
        mode_reason="master db1:3306 is unhealthy",
    )
    keys = [p.key for p in problems(snapshot(status, broker="down"))]
    assert keys == [
        "read-only",
        "database-unhealthy:db1:3306",
        "replication-broken:db3:3306",
        "repositories-out-of-sync:repo",
        "broker-lost",
    ]
    assert problems(snapshot(None, broker="up")) == []


def test_an_episode_alerts_once_when_it_begins_and_once_when_it_ends() -> None:
    clock = FakeClock()
    tracker = AlertTracker(clock, {})
    wrong = Problem("read-only", None, "Phorge is read-only")
    [begun] = tracker.update([wrong])
    assert (begun.state, begun.since) == ("firing", clock())
    clock.advance(5)
    assert tracker.update([wrong]) == []
    [ended] = tracker.update([])
    assert ended.state == "resolved"
    assert tracker.update([]) == []


def test_a_bounded_problem_alerts_only_once_it_lasted() -> None:
    clock = FakeClock()
    tracker = AlertTracker(clock, {"repositories-out-of-sync": 300})
    push = Problem("repositories-out-of-sync", "repo", "repository service repo is Partial")
    assert tracker.update([push]) == []
    clock.advance(200)
    assert tracker.update([]) == []  # a push that caught up: never alerted, never resolved
    assert tracker.update([push]) == []
    clock.advance(300)
    [begun] = tracker.update([push])
    assert begun.state == "firing"


def test_the_body_is_documented_json_and_the_signature_an_hmac() -> None:
    clock = FakeClock()
    [event] = AlertTracker(clock, {}).update([Problem("peer-down", "p:1", "peer p:1 is down")])
    body = alert_body(event, node="fp", at=1700000001.0, started_at=1700000000.0)
    assert orjson.loads(body) == {
        "state": "firing",
        "kind": "peer-down",
        "subject": "p:1",
        "key": "peer-down:p:1",
        "summary": "peer p:1 is down",
        "since": 1700000000.0,
        "at": 1700000001.0,
        "node": "fp",
    }
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert signature(body, "s3cret") == "sha256=" + expected


def test_a_node_leaving_is_an_episode_and_a_node_joining_one_notice() -> None:
    clock = FakeClock()
    tracker = AlertTracker(clock, {})

    def look(left: list[str], joined: list[str]) -> list[tuple[str, str, str | None]]:
        nodes = {"left": left, "joined": joined, "members": []}
        found = problems(NodeSnapshot("fp", 0, 0, {}, 0, {}, [], None, nodes=nodes))
        return [(e.state, e.problem.kind, e.problem.subject) for e in tracker.update(found)]

    assert look([], []) == []
    assert look(["web2:22281"], ["web3:22281"]) == [
        ("firing", "node-left", "web2:22281"),
        ("notice", "node-joined", "web3:22281"),
    ]
    assert look(["web2:22281"], ["web3:22281"]) == []
    assert look([], ["web3:22281"]) == [("resolved", "node-left", "web2:22281")]
    assert look([], []) == []  # a notice has no end
    [event] = AlertTracker(clock, {}).update([Problem("node-joined", "w:1", "node w:1 joined")])
    body = orjson.loads(alert_body(event, node="fp", at=1.0, started_at=1.0))
    assert (body["state"], body["key"]) == ("notice", "node-joined:w:1")


def test_a_check_that_could_not_tell_ends_no_episode() -> None:
    """A replica broken, then unreachable for a check or two, is not told resolved.

    Its failed check has no replication reading; nor do unreadable repository
    tables list the service out of sync. The episode ends when a reading says so.
    """
    clock = FakeClock()
    tracker = AlertTracker(clock, {"repositories-out-of-sync": 300})

    def look(replication: str | None, *, tables_read: bool = True) -> list[tuple[str, str]]:
        services = (ServiceReading("S", "repo", False, (), (), "Partial", None, (), ()),)
        status = cluster_status(
            (database("db2:3306", replication=replication),),
            RepositoriesReading(
                "default", "h", 0.0, None, None, tables_read, services if tables_read else ()
            ),
        )
        reading = snapshot(status)
        events = tracker.update(problems(reading), undecided(reading))
        return [(event.state, event.problem.key) for event in events]

    assert look("not-replicating") == [("firing", "replication-broken:db2:3306")]
    clock.advance(200)
    assert look(None, tables_read=False) == []  # db2 did not answer; the tables were unreadable
    clock.advance(200)
    # The service, out of sync all along, has lasted its 300 s now.
    assert look(None) == [("firing", "repositories-out-of-sync:repo")]
    assert look("okay") == [("resolved", "replication-broken:db2:3306")]
