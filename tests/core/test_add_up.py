"""The node's figures from its workers' readings: Aphlict's status keys keep their meaning."""

from __future__ import annotations

from dataclasses import replace

from relay.core.add_up import add_latencies, add_up
from relay.core.latency_slots import LatencySlot
from relay.core.snapshot import (
    BrokerReading,
    InstanceReading,
    NodeSnapshot,
    OverloadReading,
    PeerReading,
)
from relay.core.worker_reading import (
    NOT_ANSWERING,
    SERVING,
    UNREADABLE,
    LatencyReading,
    WorkerReading,
    WorkerSlot,
)

BOUNDS = (0.005, 0.1)


def snapshot(fingerprint: str = "A", **fields: object) -> NodeSnapshot:
    base = NodeSnapshot(
        fingerprint=fingerprint,
        uptime_ms=5,
        connections=0,
        rejected={},
        subscriptions=0,
        instances={},
        peers=(),
        cluster_status=None,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def reading(index: int, snap: NodeSnapshot, latency: LatencyReading | None = None) -> WorkerReading:
    return WorkerReading(index, 100 + index, 0, snap, latency or LatencyReading(BOUNDS, (0, 0, 0)))


def serving(*readings: WorkerReading) -> list[WorkerSlot]:
    return [WorkerSlot(r.index, SERVING, r) for r in readings]


def test_browsers_and_deliveries_add_up_messages_and_history_are_the_largest_copy() -> None:
    # Every worker sees each message once (posted to it, or through the broker);
    # the second one was restarted and has seen fewer so far.
    first = reading(
        0,
        snapshot(
            connections=3,
            subscriptions=4,
            rejected={"too many": 1},
            instances={"default": InstanceReading(3, 5, 10, 30, 4, 1200)},
        ),
    )
    second = reading(
        1,
        snapshot(
            "B",
            connections=2,
            subscriptions=2,
            rejected={"too many": 2, "slow": 1},
            instances={"default": InstanceReading(2, 2, 6, 20, 4, None)},
        ),
    )
    view = add_up(serving(first, second), own=first, uptime_ms=99_000)
    status = view.status("default")
    assert status["clients.active"] == 5
    assert status["clients.total"] == 7
    assert status["messages.out"] == 50
    assert status["messages.in"] == 10
    assert status["history.size"] == 4
    assert status["history.age"] == 1200
    assert status["uptime"] == 99_000
    # The answering worker's own identity; every worker in the workers section.
    assert status["fingerprint"] == "A"
    assert [w["index"] for w in status["workers"]] == [0, 1]
    assert status["workers"][1] == {
        "index": 1,
        "pid": 101,
        "restarts": 0,
        "version": "",
        "fingerprint": "B",
        "connections": 2,
        "messages_in": 6,
        "messages_out": 20,
        "uptime": 5,
        "state": "serving",
    }
    assert view.snapshot.connections == 5
    assert view.snapshot.subscriptions == 6
    assert view.snapshot.rejected == {"too many": 3, "slow": 1}
    assert view.answering == 2


def test_an_instance_only_one_worker_counts_is_the_node_s_as_it_is() -> None:
    only = InstanceReading(1, 1, 2, 2, 1, 10)
    first = reading(0, snapshot(instances={"a": only}))
    second = reading(1, snapshot(instances={"b": only}))
    view = add_up(serving(first, second), own=second, uptime_ms=1)
    assert view.snapshot.instances == {"a": only, "b": only}


def test_a_silent_or_unreadable_worker_is_listed_and_left_out_of_the_sums() -> None:
    first = reading(0, snapshot(connections=3))
    slots = [
        WorkerSlot(0, SERVING, first),
        WorkerSlot(1, NOT_ANSWERING),
        WorkerSlot(2, UNREADABLE),
    ]
    view = add_up(slots, own=first, uptime_ms=1)
    assert view.snapshot.connections == 3
    assert view.answering == 1
    assert view.status("default")["workers"][1:] == [
        {"index": 1, "state": "not answering"},
        {"index": 2, "state": "unreadable"},
    ]


def peer(state: str, sent: int, error: str | None = None) -> PeerReading:
    return PeerReading(
        host="10.0.0.2",
        port=22281,
        protocol="http",
        fingerprint=None,
        is_self=False,
        state=state,
        batching=True,
        sent=sent,
        requests=sent,
        failed=1,
        dropped=0,
        queue=2,
        in_flight=0,
        last_error=error,
        last_latency_ms=1.0,
    )


def test_each_peer_once_with_counts_added_and_the_worst_state() -> None:
    first = reading(0, snapshot(peers=(peer("up", 10),)))
    second = reading(1, snapshot(peers=(peer("down", 5, "connection refused"),)))
    (link,) = add_up(serving(first, second), own=first, uptime_ms=1).status("x")["cluster"]
    assert link["sent"] == 15
    assert link["failed"] == 2
    assert link["queue"] == 4
    assert link["state"] == "down"
    assert link["last_error"] == "connection refused"


def broker(state: str, published: int, received: int) -> BrokerReading:
    return BrokerReading(
        url="redis://127.0.0.1:6379/0",
        state=state,
        since_seconds=3.0,
        last_error=None if state == "up" else "connection refused",
        published=published,
        received=received,
        queue=1,
        dropped=0,
        reconnects=1,
        stale_subscriptions=0,
    )


def test_the_broker_link_publishes_once_per_post_and_receives_per_worker() -> None:
    first = reading(0, snapshot(broker=broker("up", 7, 12)))
    second = reading(1, snapshot(broker=broker("down", 5, 9)))
    status = add_up(serving(first, second), own=first, uptime_ms=1).status("x")["broker"]
    assert status["published"] == 12
    assert status["received"] == 12
    assert status["queue"] == 2
    assert status["reconnects"] == 2
    assert status["state"] == "down"
    assert status["last_error"] == "connection refused"
    assert status["url"] == "redis://127.0.0.1:6379/0"


def test_overload_and_alert_counters_add_up_and_the_cluster_view_is_the_answering_worker_s() -> (
    None
):
    nodes: dict[str, object] = {"members": [], "totals": {}}
    first = reading(
        0,
        snapshot(
            overload=OverloadReading("refuse", False, 1, 1),
            alerts={"sent": 1, "failed": 0, "dropped": 0, "queue": 0},
            nodes=nodes,
        ),
    )
    second = reading(
        1,
        snapshot(
            overload=OverloadReading("refuse", True, 2, 1),
            alerts={"sent": 2, "failed": 1, "dropped": 0, "queue": 1},
        ),
    )
    view = add_up(serving(first, second), own=first, uptime_ms=1)
    assert view.snapshot.overload == OverloadReading("refuse", True, 3, 2)
    assert view.snapshot.alerts == {"sent": 3, "failed": 1, "dropped": 0, "queue": 1}
    assert view.snapshot.nodes == nodes


def test_the_siblings_recent_latencies_are_handed_to_the_answering_worker() -> None:
    own = replace(reading(0, snapshot()), recent=(LatencySlot(1.0, 1, 0.1, 0.1),))
    other = replace(reading(1, snapshot("B")), recent=(LatencySlot(2.0, 2, 0.2, 0.15),))
    view = add_up(serving(own, other), own=own, uptime_ms=5)
    # Its own are in its time series already: only the siblings' are added.
    assert view.sibling_latencies == {"B": (LatencySlot(2.0, 2, 0.2, 0.15),)}


def test_latencies_merge_bucket_by_bucket() -> None:
    fast = LatencyReading(BOUNDS, (1, 1, 1), 0.002)
    slow = LatencyReading(BOUNDS, (0, 0, 1), 0.2)
    first = reading(0, snapshot(), fast)
    second = reading(1, snapshot(), slow)
    merged = add_up(serving(first, second), own=first, uptime_ms=1).latency
    assert merged == LatencyReading(BOUNDS, (1, 1, 2), 0.202)
    assert merged.count == 2
    # Other bounds (a mixed upgrade) cannot be merged faithfully: left out.
    other = LatencyReading((1.0,), (5, 5), 3.0)
    assert add_latencies([fast, other]) == fast
    assert add_latencies([]) == LatencyReading()
