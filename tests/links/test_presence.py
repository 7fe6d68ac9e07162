"""Presence records and verdicts: the format, freshness on a fake clock, totals (no Redis)."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from relay.core.cluster_reading import ClusterStatusReading
from relay.core.snapshot import BrokerReading, InstanceReading, NodeSnapshot, PeerReading
from relay.links.presence import (
    GONE_AFTER,
    STALE_AFTER,
    Announcement,
    Freshness,
    Identity,
    PresenceKeys,
    Rates,
    Sighting,
    announcement,
    freshness,
    parse_listing,
)
from tests.support import FakeClock

IDENTITY = Identity(
    fingerprint="FPaaaaaaaaaaaaaa",
    node="web1:100",
    host="web1",
    pid=101,
    worker=0,
    version="0.1.0",
    started_at=1_700_000_000.0,
    interval=2.0,
)


def record(identity: Identity = IDENTITY, browsers: int = 3, rate_out: float = 1.5) -> Announcement:
    return Announcement(
        identity=identity,
        browsers=browsers,
        rate_in=2.0,
        rate_out=rate_out,
        broker_state="up",
        broker_queue=0,
        peers_up=0,
        peers=0,
        cluster_status=None,
    )


def other(fingerprint: str, node: str, worker: int | None = None) -> Identity:
    return dataclasses.replace(IDENTITY, fingerprint=fingerprint, node=node, worker=worker)


def test_keys_live_under_the_prefix() -> None:
    keys = PresenceKeys("relay-a")
    assert keys.index == "relay-a:presence"
    assert keys.record_head + "FP" == "relay-a:presence:FP"


def test_a_record_reads_back_as_written() -> None:
    found = record()
    assert Announcement.decode(found.encode()) == found
    assert orjson.loads(found.encode())["format"] == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"format": 2}',
        orjson.dumps({**orjson.loads(record().encode()), "extra": 1}),
        orjson.dumps({**orjson.loads(record().encode()), "browsers": "many"}),
        orjson.dumps({**orjson.loads(record().encode()), "rate_in": True}),
        record(dataclasses.replace(IDENTITY, interval=0)).encode(),
        b'{"format": 1, "browsers": 1}',
        orjson.dumps({**orjson.loads(record().encode()), "address": 7}),
        orjson.dumps({**orjson.loads(record().encode()), "cluster_status": []}),
        record(dataclasses.replace(IDENTITY, node=None)).encode(),  # type: ignore[arg-type]
        record(dataclasses.replace(IDENTITY, worker="1")).encode(),  # type: ignore[arg-type]
    ],
)
def test_records_of_another_shape_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match="presence record"):
        Announcement.decode(raw)


def test_freshness_turns_stale_after_two_missed_rounds_and_gone_at_the_expiry() -> None:
    assert freshness(0.0, 2.0) is Freshness.FRESH
    assert freshness(STALE_AFTER * 2.0, 2.0) is Freshness.FRESH
    assert freshness(STALE_AFTER * 2.0 + 0.01, 2.0) is Freshness.STALE
    assert freshness(GONE_AFTER * 2.0, 2.0) is Freshness.STALE
    assert freshness(GONE_AFTER * 2.0 + 0.01, 2.0) is Freshness.GONE


def test_rates_measure_counters_between_calls() -> None:
    clock = FakeClock()
    rates = Rates(clock)
    assert rates.rate("in", 10) == 0.0
    clock.advance(2.0)
    assert rates.rate("in", 15) == 2.5
    assert rates.rate("in", 20) == 0.0  # no time passed: no rate rather than a division
    clock.advance(1.0)
    assert rates.rate("in", 0) == 0.0  # a counter that went back (a restart) is not negative


def test_an_announcement_sums_up_the_snapshot() -> None:
    clock = FakeClock()
    rates = Rates(clock)
    peer = PeerReading("h", 1, "http", None, False, "up", True, 0, 0, 0, 0, 0, 0, None, None)
    me = dataclasses.replace(peer, is_self=True, state="self")
    down = dataclasses.replace(peer, state="down")
    broker = BrokerReading("redis://r", "down", 1.0, "x", 0, 0, 7, 0, 0, 0)
    snapshot = NodeSnapshot(
        fingerprint="FP",
        uptime_ms=1,
        connections=4,
        rejected={},
        subscriptions=0,
        instances={"a": InstanceReading(messages_in=3, messages_out=5)},
        peers=[me, peer, down],
        cluster_status=ClusterStatusReading("", "", "", "", "read-only", "why", (), None),
        broker=broker,
    )
    found = announcement(snapshot, IDENTITY, rates)
    assert (found.browsers, found.broker_state, found.broker_queue) == (4, "down", 7)
    assert (found.peers_up, found.peers, found.cluster_status) == (1, 2, "read-only")
    assert (found.rate_in, found.rate_out) == (0.0, 0.0)
    clock.advance(1.0)
    later = dataclasses.replace(snapshot, instances={"a": InstanceReading(4, 0, 6, 9)})
    assert (announcement(later, IDENTITY, rates).rate_in, found.rate_out) == (3.0, 0.0)


def listing(now_ms: int, *entries: tuple[Announcement | bytes, int], kept: int = 1) -> list[object]:
    reply: list[object] = [now_ms, kept]
    for found, at_ms in entries:
        raw = found if isinstance(found, bytes) else found.encode()
        reply += [b"fp", str(at_ms).encode(), raw]
    return reply


def test_a_listing_gives_ages_on_redis_clock_and_counts_unreadable_records() -> None:
    found = parse_listing(listing(10_000, (record(), 7_500), (b"junk", 9_000)))
    assert found.sightings == [Sighting(record(), 2.5)]
    assert (found.unreadable, found.own_kept) == (1, True)
    assert not parse_listing(listing(10_000, kept=0)).own_kept  # Redis lost this node's record
    for broken in ([], [1], [1, 1, b"fp"]):
        with pytest.raises(ValueError, match="wrong shape"):
            parse_listing(broken)
