"""The node's figures from its workers': Aphlict's status keys keep their meaning."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from relay.workers.totals import node_metrics, node_status


def worker_status(**figures: object) -> dict[str, object]:
    status: dict[str, object] = {
        "instance": "default",
        "uptime": 5,
        "clients.active": 0,
        "clients.total": 0,
        "messages.in": 0,
        "messages.out": 0,
        "version": 7,
        "history.size": 0,
        "history.age": None,
        "fingerprint": "A",
        "cluster": [],
    }
    status.update(figures)
    return status


def test_browsers_and_deliveries_add_up_messages_and_history_are_the_largest_copy() -> None:
    # Every worker sees each message once (posted to it, or through the broker);
    # the second one was restarted and has seen fewer so far.
    first = worker_status(
        **{"clients.active": 3, "clients.total": 5, "messages.out": 30, "history.size": 4}
    )
    first.update({"history.age": 1200, "messages.in": 10})
    second = worker_status(
        **{"clients.active": 2, "clients.total": 2, "messages.out": 20, "history.size": 4},
        fingerprint="B",
    )
    second["messages.in"] = 6
    workers = [{"index": 0}, {"index": 1}]
    status = node_status([first, second], uptime_ms=99_000, workers=workers)
    assert status["clients.active"] == 5
    assert status["clients.total"] == 7
    assert status["messages.out"] == 50
    assert status["messages.in"] == 10
    assert status["history.size"] == 4
    assert status["history.age"] == 1200
    assert status["uptime"] == 99_000
    # The answering worker's own identity; every worker in the workers section.
    assert status["fingerprint"] == "A"
    assert status["workers"] == workers
    assert status["version"] == 7


def test_each_peer_once_with_counts_added_and_the_worst_state() -> None:
    def link(state: str, sent: int, error: str | None = None) -> dict[str, object]:
        return {
            "host": "10.0.0.2",
            "port": 22281,
            "state": state,
            "sent": sent,
            "failed": 1,
            "dropped": 0,
            "queue": 2,
            "last_error": error,
            "last_latency_ms": 1.0,
        }

    first = worker_status(cluster=[link("up", 10)])
    second = worker_status(cluster=[link("down", 5, "connection refused")])
    (peer,) = node_status([first, second], uptime_ms=1, workers=[])["cluster"]
    assert peer["sent"] == 15
    assert peer["failed"] == 2
    assert peer["queue"] == 4
    assert peer["state"] == "down"
    assert peer["last_error"] == "connection refused"


def test_the_broker_link_publishes_once_per_post_and_receives_per_worker() -> None:
    def link(state: str, published: int, received: int) -> dict[str, object]:
        return {
            "url": "redis://127.0.0.1:6379/0",
            "state": state,
            "since_seconds": 3.0,
            "last_error": None if state == "up" else "connection refused",
            "published": published,
            "received": received,
            "queue": 1,
            "dropped": 0,
            "reconnects": 1,
            "stale_subscriptions": 0,
        }

    first = worker_status(broker=link("up", 7, 12))
    second = worker_status(broker=link("down", 5, 9))
    broker = node_status([first, second], uptime_ms=1, workers=[])["broker"]
    assert broker["published"] == 12
    assert broker["received"] == 12
    assert broker["queue"] == 2
    assert broker["reconnects"] == 2
    assert broker["state"] == "down"
    assert broker["last_error"] == "connection refused"
    assert broker["url"] == "redis://127.0.0.1:6379/0"


def exposition(connections: int, delivered: int, history: int, latency: float) -> str:
    registry = CollectorRegistry()
    Gauge("relay_browser_connections", "Open.", registry=registry).set(connections)
    counter = Counter("relay_messages_out", "Out.", ["instance"], registry=registry)
    counter.labels("default").inc(delivered)
    Gauge("relay_history_messages", "Kept.", ["instance"], registry=registry).labels("default").set(
        history
    )
    Gauge("relay_peer_up", "Up.", ["peer"], registry=registry).labels("http://p:1").set(
        1 if connections else 0
    )
    histogram = Histogram("relay_delivery_latency_seconds", "L.", registry=registry)
    histogram.observe(latency)
    return generate_latest(registry).decode()


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_metrics_add_up_except_copies_and_peer_state() -> None:
    merged = samples(node_metrics([exposition(3, 30, 7, 0.002), exposition(0, 20, 7, 0.2)]))
    assert merged[("relay_browser_connections", ())] == 3
    assert merged[("relay_messages_out_total", (("instance", "default"),))] == 50
    assert merged[("relay_history_messages", (("instance", "default"),))] == 7
    # One worker's link is down: the node's is.
    assert merged[("relay_peer_up", (("peer", "http://p:1"),))] == 0
    assert merged[("relay_delivery_latency_seconds_count", ())] == 2
    assert merged[("relay_delivery_latency_seconds_bucket", (("le", "0.005"),))] == 1
    assert merged[("relay_delivery_latency_seconds_bucket", (("le", "+Inf"),))] == 2
