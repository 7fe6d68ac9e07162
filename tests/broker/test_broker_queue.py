"""The broker's publish queue: bounded, oldest dropped, aged out, batches put back in order."""

from __future__ import annotations

from relay.broker.queue import PublishQueue
from tests.support import FakeClock


def names(batch: list) -> list[bytes]:  # type: ignore[type-arg]
    return [bytes(item.payload) for item in batch]


def test_batches_come_oldest_first_and_a_full_queue_drops_the_oldest() -> None:
    queue = PublishQueue(3, 60.0, FakeClock())
    for name in (b"a", b"b", b"c", b"d"):
        queue.put("default", name)
    assert queue.dropped == 1
    assert names(queue.take(2)) == [b"b", b"c"]
    assert names(queue.take(5)) == [b"d"]
    assert queue.take(5) == []


def test_posts_past_their_age_are_dropped_and_counted() -> None:
    clock = FakeClock()
    queue = PublishQueue(10, 60.0, clock)
    queue.put("default", b"old")
    clock.advance(61)
    queue.put("default", b"new")
    assert names(queue.take(10)) == [b"new"]
    assert queue.dropped == 1


def test_a_failed_batch_goes_back_in_front_in_its_order() -> None:
    queue = PublishQueue(4, 60.0, FakeClock())
    for name in (b"a", b"b", b"c"):
        queue.put("default", name)
    batch = queue.take(2)
    queue.put("default", b"d")
    queue.put("default", b"e")
    queue.put_back(batch)  # room for one: the newer of the two is kept
    assert queue.dropped == 1
    assert names(queue.take(10)) == [b"b", b"c", b"d", b"e"]
