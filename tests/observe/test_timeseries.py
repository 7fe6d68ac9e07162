"""The status page's time series: rates, gauges and latencies per sample, in a bounded ring."""

from __future__ import annotations

from dataclasses import replace

from relay.core.cluster_reading import ClusterStatusReading, DatabaseReading, HealthReading
from relay.core.latency_slots import LatencySlot
from relay.core.snapshot import BrokerReading, InstanceReading, NodeSnapshot, PeerReading
from relay.observe.timeseries import KEEP_AT_LEAST, MAX_CAPACITY, SERIES, TimeSeries, capacity_for
from tests.support import FakeClock


def snapshot(
    messages_in: int = 0,
    messages_out: int = 0,
    *,
    connections: int = 0,
    peers: list[PeerReading] | None = None,
    cluster_status: ClusterStatusReading | None = None,
) -> NodeSnapshot:
    return NodeSnapshot(
        fingerprint="F" * 16,
        uptime_ms=0,
        connections=connections,
        rejected={},
        subscriptions=0,
        instances={
            # Two instances: the rates are the node's, over all of them.
            "default": InstanceReading(messages_in=messages_in, messages_out=messages_out),
            "acme": InstanceReading(messages_in=1, messages_out=2),
        },
        peers=peers or [],
        cluster_status=cluster_status,
    )


def peer(state: str, queue: int, *, is_self: bool = False) -> PeerReading:
    return PeerReading(
        host="10.0.0.2",
        port=22281,
        protocol="http",
        fingerprint=None,
        is_self=is_self,
        state=state,
        batching=False,
        sent=0,
        requests=0,
        failed=0,
        dropped=0,
        queue=queue,
        in_flight=0,
        last_error=None,
        last_latency_ms=None,
    )


def database(*, disabled: bool, healthy: bool) -> DatabaseReading:
    return DatabaseReading(
        ref="db",
        host="db.example.com",
        port=3306,
        role="master",
        disabled=disabled,
        partition=None,
        connection=None,
        replication=None,
        health=HealthReading(healthy, 0, 0, 5, None, None),
    )


def test_rates_come_from_the_difference_with_the_previous_sample() -> None:
    clock = FakeClock()
    series = TimeSeries(clock, 10)
    first = series.sample(snapshot(100, 1000))
    assert (first.rate_in, first.rate_out) == (0.0, 0.0)  # nothing to compare with yet
    clock.advance(2.0)
    second = series.sample(snapshot(150, 1400, connections=7))
    assert (second.rate_in, second.rate_out) == (25.0, 200.0)
    assert second.connections == 7
    assert second.t - first.t == 2.0


def test_latency_is_the_mean_and_max_of_the_interval_then_starts_over() -> None:
    clock = FakeClock()
    series = TimeSeries(clock, 10)
    for seconds in (0.001, 0.002, 0.006):
        series.observe_latency(seconds)
    sample = series.sample(snapshot())
    assert (sample.latency_mean_ms, sample.latency_max_ms) == (3.0, 6.0)
    clock.advance(1.0)
    quiet = series.sample(snapshot())
    assert (quiet.latency_mean_ms, quiet.latency_max_ms) == (None, None)


def test_a_worker_adds_its_siblings_latencies_to_its_own_merged_not_averaged() -> None:
    clock = FakeClock()
    series = TimeSeries(clock, 10, interval=1.0)
    series.sample(snapshot())
    series.observe_latency(0.001)  # one fast post here; the sibling had three slow ones
    clock.advance(1.0)
    sibling = {"W1": (LatencySlot(clock.now - 0.5, 3, 0.030, 0.020),)}
    sample = series.sample(snapshot(), sibling)
    assert sample.latency_count == 4
    assert (sample.latency_mean_ms, sample.latency_max_ms) == (7.75, 20.0)
    clock.advance(1.0)
    again = series.sample(snapshot(), {"W1": (*sibling["W1"], LatencySlot(clock.now, 1, 5.0, 5.0))})
    assert (again.latency_count, again.latency_max_ms) == (1, 5000.0)  # the new slot only


def test_a_worker_keeps_its_latencies_in_slots_for_its_siblings() -> None:
    clock = FakeClock(100.0)
    series = TimeSeries(clock, 10, interval=2.0)
    series.observe_latency(0.004)
    clock.advance(0.25)
    assert series.recent_latencies() == (LatencySlot(100.25, 1, 0.004, 0.004),)
    series.resize(10, interval=4.0)
    assert series.recent_latencies() == ()


def test_at_a_short_interval_the_slots_outlive_a_sibling_that_samples_late() -> None:
    clock = FakeClock(100.0)
    series = TimeSeries(clock, 10, interval=0.2)
    series.observe_latency(0.004)
    clock.advance(KEEP_AT_LEAST - 0.1)  # ten intervals without a sample
    assert [slot.count for slot in series.recent_latencies()] == [1]


def test_peers_and_databases_are_summed_up_per_sample() -> None:
    series = TimeSeries(FakeClock(), 10)
    peers = [
        peer("self", 0, is_self=True),
        peer("up", 3),
        peer("down", 40),
        peer("refused", 0),
        peer("unknown", 0),
    ]
    cluster = ClusterStatusReading(
        instance="phorge-cluster",
        observer="here",
        databases_key="databases",
        repositories_key="repositories",
        mode="read-only",
        mode_reason="master db is unhealthy",
        databases=(
            database(disabled=False, healthy=False),
            database(disabled=False, healthy=True),
            database(disabled=True, healthy=False),
        ),
        repositories=None,
    )
    sample = series.sample(snapshot(peers=peers, cluster_status=cluster))
    assert (sample.peer_queue, sample.peers_down) == (43, 2)
    assert (sample.databases_healthy, sample.databases_total, sample.read_only) == (1, 2, True)
    off = series.sample(snapshot())
    assert (off.databases_healthy, off.databases_total, off.read_only) == (None, None, None)


def test_the_ring_keeps_the_newest_samples_only() -> None:
    clock = FakeClock()
    series = TimeSeries(clock, 5)
    for n in range(12):
        series.sample(snapshot(n))
        clock.advance(1.0)
    assert len(series) == 5
    columns = series.columns()
    assert list(columns) == list(SERIES)
    assert columns["t"] == [1007.0, 1008.0, 1009.0, 1010.0, 1011.0]
    assert columns["rate_in"] == [1.0] * 5
    series.resize(3)
    assert series.columns()["t"] == [1009.0, 1010.0, 1011.0]
    series.resize(10)
    assert len(series) == 3
    assert series.capacity == 10


def test_the_capacity_covers_the_window_and_stays_bounded() -> None:
    assert capacity_for(600, 2) == 301  # ten minutes at one sample every 2 s
    assert TimeSeries(FakeClock(), capacity_for(86_400, 0.01)).capacity == MAX_CAPACITY


def test_broker_mode_adds_the_queue_for_redis_and_whether_redis_is_away() -> None:
    series = TimeSeries(FakeClock(), 10)
    plain = series.sample(snapshot())
    assert (plain.broker_queue, plain.broker_down) == (None, None)  # not in broker mode
    for state, down in (("up", False), ("down", True), ("connecting", False)):
        reading = BrokerReading(
            url="redis://127.0.0.1:6379/0",
            state=state,
            since_seconds=1.0,
            last_error=None,
            published=5,
            received=5,
            queue=7,
            dropped=0,
            reconnects=0,
            stale_subscriptions=0,
        )
        sample = series.sample(replace(snapshot(), broker=reading))
        assert (sample.broker_queue, sample.broker_down) == (7, down)
