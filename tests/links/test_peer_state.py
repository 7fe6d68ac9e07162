"""A peer link's decisions, without an event loop: the clock is moved, answers are made up."""

from __future__ import annotations

import logging

import orjson
import pytest

from relay.config import PeerConfig, PeeringConfig
from relay.links.backoff import Backoff
from relay.links.outbox import Outgoing
from relay.links.peer_batch import BATCH_BYTES, SOLO_BYTES
from relay.links.peer_state import (
    MIN_BATCH_BYTES,
    PeerLinkState,
    PeerState,
    Post,
    receipt_fingerprint,
)
from tests.support import FakeClock

OWN = "ownFingerprint23"
PEER = "peerFingerprint2"
OK = orjson.dumps({"fingerprint": PEER})


def link(clock: FakeClock, **settings: float) -> PeerLinkState:
    """A link to an IPv6 peer; every backoff delay is half its base (no jitter)."""
    return PeerLinkState(
        "cluster[1]",
        PeerConfig(host="::1", port=22281, protocol="http"),
        PeeringConfig(**settings),  # type: ignore[arg-type]
        OWN,
        clock=clock,
        backoff=Backoff(1.0, 8.0, rng=lambda: 0.0),
    )


def send(state: PeerLinkState) -> tuple[list[Outgoing], Post]:
    """Take what the link sends next and start its request, as a sender task does."""
    items = state.take()
    assert items is not None
    post = state.start(items)
    assert post is not None
    return items, post


def answer(
    state: PeerLinkState, status: int = 200, receipt: bytes = OK, *, capable: bool = False
) -> None:
    """Send what the link sends next and give it ``status`` as the peer's answer."""
    items, post = send(state)
    state.answered(post, status, receipt, capable)
    state.finish(items)


def payloads(items: list[Outgoing] | None) -> list[bytes]:
    return [bytes(item.payload) for item in items or []]


def batching_link(clock: FakeClock, **settings: float) -> PeerLinkState:
    """A link whose peer said, in its first receipt, that it takes batches."""
    state = link(clock, **settings)
    state.offer("default", b"first")
    answer(state, capable=True)
    assert state.batching
    return state


def test_a_receipt_brings_the_peer_up_and_names_it(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    state = link(clock)
    assert (state.state, state.probing, state.wants(frozenset({PEER}))) == (
        PeerState.UNKNOWN,
        True,
        True,  # its fingerprint is not known yet: it may not have the message
    )
    state.offer("acme", b'{"key":"1"}')
    items, post = send(state)
    assert (post.items, post.batch) == (items, False)
    clock.advance(0.25)
    with caplog.at_level(logging.INFO, logger="relay.peers"):
        state.answered(post, 200, OK, capable=False)
    state.finish(items)
    assert (state.state, state.fingerprint, state.probing) == (PeerState.UP, PEER, False)
    assert (state.sent, state.requests, state.last_latency) == (1, 1, 0.25)
    assert not state.wants(frozenset({PEER}))
    assert state.wants(frozenset({"someoneElse23456"}))
    assert state.idle
    assert state.take() is None
    assert f"peer cluster[1] (http://[::1]:22281) is up (fingerprint {PEER})" in caplog.text
    assert caplog.records[0].peer == "http://[::1]:22281"  # type: ignore[attr-defined]


def test_no_answer_backs_off_and_the_messages_go_first_next_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    state = link(clock)
    for n in range(3):
        state.offer("default", b"m%d" % n)
    caplog.set_level(logging.INFO, logger="relay.peers")
    items, post = send(state)
    state.unanswered(post, "cannot connect: Connection refused")
    state.finish(items)
    assert (state.state, state.failed, state.last_error) == (
        PeerState.DOWN,
        1,
        "cannot connect: Connection refused",
    )
    assert state.delay() == 0.5
    clock.advance(0.5)
    assert state.delay() == 0.0
    # The next failure waits twice as long.
    items, post = send(state)
    assert payloads(items) == [b"m0"]
    state.unanswered(post, "timed out", timed_out=True)
    state.finish(items)
    assert state.delay() == 1.0
    assert caplog.text.count("is down: cannot connect") == 1  # logged once per outage
    clock.advance(1.0)
    answer(state)
    assert (state.state, state.last_error, state.delay()) == (PeerState.UP, None, 0.0)
    assert "is up again" in caplog.text
    assert payloads(state.take()) == [b"m1"]


def test_a_probe_that_waited_while_another_failed_goes_back_to_the_queue() -> None:
    clock = FakeClock()
    state = link(clock)
    state.offer("default", b"one")
    state.offer("default", b"two")
    first, waiting = state.take(), state.take()
    assert first is not None
    assert waiting is not None
    post = state.start(first)
    assert post is not None
    state.unanswered(post, "timed out")
    state.finish(first)
    # The second sender got the probe's turn only now: the peer is backing off.
    assert state.start(waiting) is None
    state.finish(waiting)
    assert (len(state.outbox), state.outbox.dropped, state.failed) == (2, 0, 1)
    clock.advance(state.delay())
    # Both went back to their places in line: the retry keeps the order they were queued in.
    assert (payloads(state.take()), payloads(state.take())) == ([b"one"], [b"two"])


def test_a_link_going_down_from_up_tells_what_it_holds_oldest_first_once() -> None:
    clock = FakeClock()
    told: list[list[bytes]] = []
    state = PeerLinkState(
        "cluster[1]",
        PeerConfig(host="::1", port=22281, protocol="http"),
        PeeringConfig(),
        OWN,
        clock=clock,
        backoff=Backoff(1.0, 8.0, rng=lambda: 0.0),
        stranded=lambda link, held: told.append(payloads(held)),
    )
    state.offer("default", b"first")
    answer(state)  # up, taking one message per POST: several may be in flight
    assert told == []
    for name in (b"a", b"b", b"c", b"d"):
        state.offer("default", name)
    (a_items, a_post), (b_items, b_post) = send(state), send(state)
    # b fails first; a is still in flight, c and d are queued: all four held, in order.
    state.unanswered(b_post, "timed out", timed_out=True)
    state.finish(b_items)
    assert told == [[b"a", b"b", b"c", b"d"]]
    state.unanswered(a_post, "timed out", timed_out=True)
    state.finish(a_items)
    assert told == [[b"a", b"b", b"c", b"d"]]  # down already: told once
    assert [bytes(item.payload) for item in state.outbox.queued()] == [b"a", b"b", b"c", b"d"]
    # Up again, then down again: told again, what it holds then.
    clock.advance(state.delay())
    answer(state)
    state.offer("default", b"e")
    clock.advance(state.delay())
    items, post = send(state)
    state.unanswered(post, "timed out")
    state.finish(items)
    assert told[1] == [b"b", b"c", b"d", b"e"]  # a reached it


def test_a_link_never_up_tells_nothing_when_it_fails() -> None:
    # Nobody was told this node sends it anything itself: the others carry it already.
    told: list[list[Outgoing]] = []
    state = PeerLinkState(
        "cluster[1]",
        PeerConfig(host="::1", port=22281, protocol="http"),
        PeeringConfig(),
        OWN,
        clock=FakeClock(),
        stranded=lambda link, held: told.append(held),
    )
    state.offer("default", b"a")
    items, post = send(state)
    state.unanswered(post, "cannot connect: Connection refused")
    state.finish(items)
    assert (state.state, told) == (PeerState.DOWN, [])


def test_a_server_error_is_a_failure_a_client_error_a_refusal_that_drops() -> None:
    clock = FakeClock()
    state = link(clock)
    state.offer("default", b"kept")
    answer(state, 503, b"overloaded")
    assert (state.state, state.last_error, len(state.outbox)) == (PeerState.DOWN, "HTTP 503", 1)
    clock.advance(state.delay())
    answer(state, 401, b'  {"error": "a valid secret is required"}\n')
    assert state.state is PeerState.REFUSED
    assert state.last_error == 'HTTP 401: {"error": "a valid secret is required"}'
    assert (len(state.outbox), state.outbox.dropped, state.failed, state.requests) == (0, 1, 2, 2)


def test_a_peer_that_takes_batches_gets_what_is_queued_in_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    state = batching_link(clock)
    for n in range(5):
        state.offer("default", orjson.dumps({"n": n}))
    items, post = send(state)
    assert post.batch
    assert len(items) == 5
    # Offered without a record (none was encoded for it), each gets one with nothing covered.
    assert orjson.loads(post.batch_body()) == [
        {"instance": "default", "covered": [], "message": {"n": n}} for n in range(5)
    ]
    # One batch in flight, however much waits: a second request could overtake it.
    for n in range(300):
        state.offer("default", b"q%d" % n)
    assert state.take() is None
    state.answered(post, 200, OK, capable=True)
    state.finish(items)
    second = state.take()
    assert second is not None
    assert payloads(second)[:2] == [b"q0", b"q1"]
    assert state.reading().in_flight == len(second)


def test_a_large_message_travels_alone_in_aphlicts_format() -> None:
    clock = FakeClock()
    state = batching_link(clock)
    large = b"x" * (SOLO_BYTES + 1)
    for payload in (b"small", large, b"after"):
        state.offer("default", payload)
    items, post = send(state)
    assert (payloads(items), post.batch) == ([b"small"], True)
    state.answered(post, 200, OK, capable=True)
    state.finish(items)
    items, post = send(state)
    assert (payloads(items), post.batch) == ([large], False)


def test_a_batch_that_timed_out_shrinks_and_grows_back_as_batches_get_through() -> None:
    clock = FakeClock()
    state = batching_link(clock)
    for n in range(4):
        state.offer("default", b"t%d" % n)
    items, post = send(state)
    state.unanswered(post, "timed out", timed_out=True)
    state.finish(items)
    assert state.batch_bytes == BATCH_BYTES // 4
    for _ in range(10):
        clock.advance(state.delay())
        items, post = send(state)
        state.unanswered(post, "timed out", timed_out=True)
        state.finish(items)
    assert state.batch_bytes == MIN_BATCH_BYTES
    clock.advance(state.delay())
    answer(state, capable=True)
    assert state.batch_bytes == 2 * MIN_BATCH_BYTES


def test_a_batch_refused_as_unknown_goes_one_by_one_until_the_peer_restarts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    state = batching_link(clock)
    state.offer("default", b"a")
    state.offer("default", b"b")
    with caplog.at_level(logging.INFO, logger="relay.peers"):
        answer(state, 404, b"Not Found", capable=True)
    assert (state.batching, state.state, state.outbox.dropped) == (False, PeerState.UP, 0)
    assert "does not take batches (HTTP 404); posting one message at a time" in caplog.text
    items, post = send(state)
    assert (payloads(items), post.batch) == ([b"a"], False)
    state.answered(post, 200, OK, capable=True)  # its header is not believed again
    state.finish(items)
    assert not state.batching
    # Restarted (a new fingerprint): what it says of itself counts again.
    with caplog.at_level(logging.INFO, logger="relay.peers"):
        answer(state, 200, orjson.dumps({"fingerprint": "restartedPeer234"}), capable=True)
    assert (state.batching, state.fingerprint) == (True, "restartedPeer234")
    assert "takes batches" in caplog.text
    assert "restarted (fingerprint restartedPeer234)" in caplog.text


def test_a_receipt_with_our_own_fingerprint_means_the_entry_is_this_node() -> None:
    clock = FakeClock()
    state = link(clock)
    for payload in (b"one", b"two", b"three"):
        state.offer("default", payload)
    waiting = state.take()
    answer(state, 200, orjson.dumps({"fingerprint": OWN}))
    assert state.state is PeerState.SELF
    assert (len(state.outbox), state.wants(frozenset())) == (0, False)
    assert waiting is not None
    assert state.start(waiting) is None
    assert state.reading().is_self


def test_a_presence_answer_shows_the_entry_is_this_node_and_says_nothing_else() -> None:
    clock = FakeClock()
    state = link(clock)
    state.presence_answered("someoneElse45678")
    state.presence_answered(None)
    assert (state.state, state.fingerprint) == (PeerState.UNKNOWN, None)
    state.offer("default", b"one")
    state.presence_answered(OWN)
    assert (state.state, state.fingerprint, len(state.outbox)) == (PeerState.SELF, OWN, 0)
    assert state.reading().is_self


def test_a_peer_is_congested_when_it_is_up_and_its_queue_is_full() -> None:
    clock = FakeClock()
    state = link(clock, queue_size=2)
    state.offer("default", b"1")
    state.offer("default", b"2")
    assert not state.congested  # not up yet: a queue that fills is expected
    answer(state)
    state.offer("default", b"3")
    assert state.congested


def test_the_reading_gives_the_status_entry_key_for_key() -> None:
    clock = FakeClock()
    state = link(clock)
    assert state.reading().status() == {
        "host": "::1",
        "port": 22281,
        "protocol": "http",
        "fingerprint": None,
        "self": False,
        "state": "unknown",
        "batching": False,
        "sent": 0,
        "requests": 0,
        "failed": 0,
        "dropped": 0,
        "queue": 0,
        "in_flight": 0,
        "last_error": None,
        "last_latency_ms": None,
    }
    state.offer("default", b"a")
    state.offer("default", b"b")
    items, post = send(state)
    clock.advance(0.002)
    state.answered(post, 200, OK, capable=True)
    reading = state.reading()
    assert list(reading.status()) == list(state.reading().status())  # same keys, same order
    assert (reading.state, reading.fingerprint, reading.batching) == ("up", PEER, True)
    assert (reading.sent, reading.requests, reading.queue, reading.in_flight) == (1, 1, 1, 1)
    assert reading.last_latency_ms == pytest.approx(2.0)
    assert reading.url == "http://[::1]:22281"
    state.finish(items)
    assert state.reading().in_flight == 0


@pytest.mark.parametrize(
    ("receipt", "fingerprint"),
    [(OK, PEER), (b"[]", None), (b"not json", None), (b'{"fingerprint": 7}', None)],
)
def test_a_receipt_names_a_fingerprint_or_none(receipt: bytes, fingerprint: str | None) -> None:
    assert receipt_fingerprint(receipt) == fingerprint


def test_a_renewed_link_carries_on_with_the_old_ones_queue_state_and_counters() -> None:
    clock = FakeClock()
    old = batching_link(clock)
    old.offer("default", b"a")
    items, post = send(old)
    old.unanswered(post, "timed out")  # down, with "a" back in the queue
    old.finish(items)
    old.offer("default", b"b")
    new = link(clock, queue_size=10)
    new.adopt(old)
    assert (new.state, new.fingerprint, new.batching) == (PeerState.DOWN, PEER, True)
    assert (new.sent, new.requests, new.failed, new.last_error) == (1, 1, 1, "timed out")
    assert payloads(new.take()) == [b"a", b"b"]
    assert len(old.outbox) == 0
