"""Posts held for the broker's order: taken when Redis returns them, released when it does not."""

from __future__ import annotations

import logging

import pytest

from relay.core.encoded import EncodedMessage
from relay.core.held import HeldPosts, late_hold
from tests.support import FakeClock


def _held(clock: FakeClock, *ids: str) -> HeldPosts:
    """Posts ``ids`` held one second apart, the first at the clock's time now."""
    held = HeldPosts(clock)
    for unique in ids:
        message = EncodedMessage(b'{"uniqueID":"%s"}' % unique.encode())
        held.hold(("phorge", unique), "phorge", frozenset({"PHID-A"}), message)
        clock.now += 1.0
    return held


def test_a_post_the_broker_returns_is_taken_once() -> None:
    clock = FakeClock(0.0)
    held = _held(clock, "a", "b")
    post = held.take(("phorge", "b"))
    assert post is not None
    assert (post.instance, post.accepted_at) == ("phorge", 1.0)
    assert post.subscribers == frozenset({"PHID-A"})
    assert bytes(post.message.payload) == b'{"uniqueID":"b"}'
    assert held.take(("phorge", "b")) is None  # a duplicate the broker returns: nothing
    assert held.take(("other", "a")) is None  # another instance's post of the same id
    assert len(held) == 1
    # Redis went away: every post still held, at once.
    assert [post.accepted_at for post in held.release()] == [0.0]
    assert len(held) == 0


def test_posts_held_too_long_are_released_oldest_first_and_the_rest_wait() -> None:
    clock = FakeClock(0.0)
    held = _held(clock, "a", "b", "c", "d")  # accepted at 0, 1, 2 and 3
    held.take(("phorge", "b"))
    clock.now = 4.5
    late = held.release(older_than=2.0)  # accepted at 2.5 or before
    assert [bytes(post.message.payload) for post in late] == [
        b'{"uniqueID":"a"}',
        b'{"uniqueID":"c"}',
    ]
    assert len(held) == 1
    assert held.release(older_than=2.0) == []  # "d" waits on
    clock.now = 10.0
    assert [post.accepted_at for post in held.release(older_than=2.0)] == [3.0]
    assert len(held) == 0


def test_a_late_release_is_logged_once_per_batch(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="relay.hub"):
        late_hold(0, 5.0)
        assert caplog.records == []
        late_hold(1, 5.0)
        late_hold(3, 2.5)
    assert [record.getMessage() for record in caplog.records] == [
        "delivered 1 post here without the broker's order: Redis did not return it within 5.0 s",
        "delivered 3 posts here without the broker's order: Redis did not return them within 2.5 s",
    ]
