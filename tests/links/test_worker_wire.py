"""The record a worker sends its siblings: any reading round-trips; a bad one is refused."""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.core.latency_slots import LatencySlot
from relay.core.snapshot import (
    BrokerReading,
    InstanceReading,
    NodeSnapshot,
    OverloadReading,
    PeerReading,
)
from relay.core.worker_reading import LatencyReading, WorkerReading
from relay.links.worker_wire import VERSION, decode, encode

counts = st.integers(min_value=0, max_value=2**62)
floats = st.floats(allow_nan=False, allow_infinity=False)
texts = st.text(max_size=12)
maybe_texts = st.none() | texts

instances = st.builds(
    InstanceReading,
    clients_active=counts,
    clients_total=counts,
    messages_in=counts,
    messages_out=counts,
    history_size=counts,
    history_age_ms=st.none() | counts,
)
peers = st.builds(
    PeerReading,
    host=texts,
    port=st.integers(0, 65535),
    protocol=st.sampled_from(["http", "https"]),
    fingerprint=maybe_texts,
    is_self=st.booleans(),
    state=texts,
    batching=st.booleans(),
    sent=counts,
    requests=counts,
    failed=counts,
    dropped=counts,
    queue=counts,
    in_flight=counts,
    last_error=maybe_texts,
    last_latency_ms=st.none() | floats,
)
brokers = st.builds(
    BrokerReading,
    url=texts,
    state=texts,
    since_seconds=floats,
    last_error=maybe_texts,
    published=counts,
    received=counts,
    queue=counts,
    dropped=counts,
    reconnects=counts,
    stale_subscriptions=counts,
)
overloads = st.builds(
    OverloadReading, policy=texts, active=st.booleans(), refused=counts, episodes=counts
)
snapshots = st.builds(
    NodeSnapshot,
    fingerprint=texts,
    uptime_ms=counts,
    connections=counts,
    rejected=st.dictionaries(texts, counts, max_size=3),
    subscriptions=counts,
    instances=st.dictionaries(texts, instances, max_size=3),
    peers=st.lists(peers, max_size=3).map(tuple),
    # Not exchanged: the answering worker's own stand for the node.
    cluster_status=st.none(),
    broker=st.none() | brokers,
    overload=st.none() | overloads,
    instances_overflowed=counts,
    alerts=st.none() | st.dictionaries(texts, counts, max_size=4),
    nodes=st.none(),
    history_bytes=counts,
)


@st.composite
def latencies(draw: st.DrawFn) -> LatencyReading:
    bounds = draw(st.lists(floats, max_size=12).map(lambda b: tuple(sorted(b))))
    buckets = draw(st.lists(counts, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    return LatencyReading(bounds, tuple(buckets), draw(floats))


readings = st.builds(
    WorkerReading,
    index=st.integers(0, 255),
    pid=st.integers(1, 2**31),
    restarts=counts,
    snapshot=snapshots,
    latency=latencies(),
    recent=st.lists(
        st.builds(LatencySlot, end=floats, count=counts, total=floats, maximum=floats),
        max_size=4,
    ).map(tuple),
)


@given(readings)
def test_any_reading_round_trips(reading: WorkerReading) -> None:
    assert decode(encode(reading)) == reading


def test_the_cluster_view_is_not_sent() -> None:
    snapshot = NodeSnapshot("A", 1, 0, {}, 0, {}, (), None, nodes={"members": []})
    assert decode(encode(WorkerReading(0, 1, 0, snapshot))).snapshot.nodes is None


def test_a_record_of_an_older_build_without_history_bytes_reads_as_none_kept() -> None:
    fields = orjson.loads(record())
    del fields["snapshot"]["history_bytes"]
    assert decode(orjson.dumps(fields)).snapshot.history_bytes == 0


def test_a_record_without_recent_latencies_has_none() -> None:
    fields = orjson.loads(record())
    del fields["recent"]
    assert decode(orjson.dumps(fields)).recent == ()


def record(**changes: object) -> bytes:
    snapshot = NodeSnapshot("A", 1, 0, {}, 0, {"default": InstanceReading()}, (), None)
    fields = orjson.loads(encode(WorkerReading(0, 1, 0, snapshot)))
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = fields
        for parent in parents:
            target = target[parent]
        target[last] = value
    return orjson.dumps(fields)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "the record: not an object"),
        (record(v=VERSION + 1), "version 2, not 1"),
        (record(index="0"), "index: expected int, got '0'"),
        (record(pid=True), "pid: expected int, got True"),
        (record(snapshot=None), "snapshot: not an object"),
        (record(snapshot__peers={}), "snapshot.peers: not a list"),
        (record(snapshot__rejected={"slow": 1.5}), "snapshot.rejected: not whole numbers"),
        (
            record(snapshot__instances__default={"clients_active": "3"}),
            "snapshot.instances.default.clients_active: expected int, got '3'",
        ),
        (record(latency__counts=[1, 2]), "latency.counts: not one more than the bounds"),
        (record(latency__bounds=["x"]), "latency.bounds: not a list of numbers"),
    ],
)
def test_a_bad_record_is_refused_naming_the_field(raw: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        decode(raw)


def test_a_missing_field_without_a_default_is_refused() -> None:
    raw = record(snapshot__peers=[{"host": "h"}])
    with pytest.raises(ValueError, match=r"snapshot\.peers\[0\]\.port: missing"):
        decode(raw)
