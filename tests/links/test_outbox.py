"""The outbox of peer and broker links: bounded, oldest dropped first, expiring with age."""

from __future__ import annotations

from relay.links.outbox import Outbox, Outgoing
from tests.support import FakeClock


def drain(outbox: Outbox) -> list[bytes]:
    taken = []
    while (item := outbox.take()) is not None:
        taken.append(bytes(item.payload))
    return taken


def test_first_in_first_out_with_the_instance() -> None:
    outbox = Outbox(10, 60, FakeClock())
    outbox.put("acme", b"1")
    outbox.put("other", b"2")
    first = outbox.take()
    assert first is not None
    assert (first.instance, first.payload) == ("acme", b"1")
    assert drain(outbox) == [b"2"]


def test_full_outbox_drops_the_oldest_and_counts_it() -> None:
    outbox = Outbox(3, 60, FakeClock())
    for n in range(5):
        outbox.put("default", str(n).encode())
    assert len(outbox) == 3
    assert outbox.dropped == 2
    assert drain(outbox) == [b"2", b"3", b"4"]


def test_a_failed_message_goes_back_to_the_front() -> None:
    outbox = Outbox(3, 60, FakeClock())
    outbox.put("default", b"1")
    outbox.put("default", b"2")
    item = outbox.take()
    assert item is not None
    outbox.put_back(item)
    assert drain(outbox) == [b"1", b"2"]


def test_put_back_into_a_full_outbox_drops_the_returned_oldest() -> None:
    outbox = Outbox(2, 60, FakeClock())
    outbox.put("default", b"old")
    item = outbox.take()
    assert item is not None
    outbox.put("default", b"a")
    outbox.put("default", b"b")
    outbox.put_back(item)
    assert outbox.dropped == 1
    assert drain(outbox) == [b"a", b"b"]


def test_messages_past_their_age_are_dropped_not_sent() -> None:
    clock = FakeClock()
    outbox = Outbox(10, 60, clock)
    outbox.put("default", b"stale")
    clock.advance(30)
    outbox.put("default", b"fresh")
    clock.advance(31)
    assert drain(outbox) == [b"fresh"]
    assert outbox.dropped == 1


def test_clear_forgets_everything() -> None:
    outbox = Outbox(10, 60, FakeClock())
    outbox.put("default", b"1")
    outbox.clear()
    assert outbox.take() is None
    assert outbox.dropped == 0


# Batches, as the broker link takes them.


def names(batch: list[Outgoing]) -> list[bytes]:
    return [bytes(item.payload) for item in batch]


def test_batches_come_oldest_first_and_a_full_queue_drops_the_oldest() -> None:
    queue = Outbox(3, 60.0, FakeClock())
    for name in (b"a", b"b", b"c", b"d"):
        queue.put("default", name)
    assert queue.dropped == 1
    assert names(queue.take_batch(2)) == [b"b", b"c"]
    assert names(queue.take_batch(5)) == [b"d"]
    assert queue.take_batch(5) == []


def test_posts_past_their_age_are_dropped_and_counted() -> None:
    clock = FakeClock()
    queue = Outbox(10, 60.0, clock)
    queue.put("default", b"old")
    clock.advance(61)
    queue.put("default", b"new")
    assert names(queue.take_batch(10)) == [b"new"]
    assert queue.dropped == 1


def test_a_failed_batch_goes_back_in_front_in_its_order() -> None:
    queue = Outbox(4, 60.0, FakeClock())
    for name in (b"a", b"b", b"c"):
        queue.put("default", name)
    batch = queue.take_batch(2)
    queue.put("default", b"d")
    queue.put("default", b"e")
    queue.put_back_batch(batch)  # room for one: the newer of the two is kept
    assert queue.dropped == 1
    assert names(queue.take_batch(10)) == [b"b", b"c", b"d", b"e"]


def test_the_byte_bound_drops_the_oldest_and_counts_them() -> None:
    outbox = Outbox(100, 60, FakeClock(), max_bytes=1000)
    for n in range(12):
        outbox.put("default", str(n).encode().ljust(100), record=None)
    assert outbox.bytes == 1000
    assert outbox.dropped == 2
    assert outbox.full  # one more of the same size would push the oldest out
    assert [int(p) for p in drain(outbox)] == list(range(2, 12))
    assert outbox.bytes == 0
    assert not outbox.full


def test_a_record_counts_with_its_payload() -> None:
    outbox = Outbox(100, 60, FakeClock(), max_bytes=1000)
    outbox.put("default", b"p" * 300, record=b"r" * 300)
    outbox.put("default", b"p" * 300, record=b"r" * 300)
    assert len(outbox) == 1
    assert outbox.bytes == 600


def test_a_message_over_the_byte_bound_alone_is_dropped_and_the_rest_kept() -> None:
    outbox = Outbox(100, 60, FakeClock(), max_bytes=1000)
    outbox.put("default", b"small")
    outbox.put("default", b"x" * 1001)
    assert not outbox.full  # it does not make the queue refuse what follows
    assert drain(outbox) == [b"small"]
    assert outbox.dropped == 1
    assert not outbox.full  # an empty queue is never full


def test_put_back_keeps_the_newest_of_the_batch_that_fit_in_the_bytes() -> None:
    outbox = Outbox(100, 60, FakeClock(), max_bytes=1000)
    for n in range(4):
        outbox.put("default", str(n).encode().ljust(300))
    batch = outbox.take_batch(4)
    assert outbox.bytes == 0
    outbox.put("default", b"new".ljust(300))  # arrived while the batch was out
    outbox.put_back_batch(batch)
    # Room for two of the batch beside the new one: its newest two.
    assert [p.strip() for p in drain(outbox)] == [b"2", b"3", b"new"]
    assert outbox.dropped == 2


def test_expired_and_cleared_messages_give_their_bytes_back() -> None:
    clock = FakeClock()
    outbox = Outbox(100, 60, clock, max_bytes=1000)
    outbox.put("default", b"x" * 400)
    clock.advance(61)
    outbox.put("default", b"y" * 400)
    assert [bytes(p)[:1] for p in drain(outbox)] == [b"y"]
    assert outbox.bytes == 0
    outbox.put("default", b"z" * 400)
    outbox.clear()
    assert outbox.bytes == 0


def test_a_renewed_outbox_takes_over_the_old_ones_messages_ages_and_drops() -> None:
    clock = FakeClock()
    old = Outbox(10, 60, clock)
    for n in range(4):
        old.put("default", str(n).encode())
        clock.advance(10)
    old.dropped = 2
    new = Outbox(3, 60, clock)  # a smaller queue_size after the reload
    new.take_over(old)
    assert (len(old), old.bytes, old.dropped) == (0, 0, 0)
    assert new.dropped == 3  # the old link's two, and the oldest that no longer fits
    clock.advance(35)  # they keep their age: 1 was queued 65 s ago (dropped), 2 55 s ago
    assert new.take_batch(10)[0].payload == b"2"
    assert new.dropped == 4


def test_batches_failing_in_the_other_order_go_back_in_the_order_they_were_queued() -> None:
    # Two sends in flight; the later one fails first. Put back to the front each
    # time, the earlier batch would then go in front, then the later one in front
    # of it: a retry would reorder what was queued.
    for first_back in ("earlier", "later"):
        outbox = Outbox(10, 60, FakeClock())
        for name in (b"a", b"b", b"c", b"d", b"e"):
            outbox.put("default", name)
        taken = {"earlier": outbox.take_batch(2), "later": outbox.take_batch(2)}
        outbox.put("default", b"f")
        outbox.put_back_batch(taken.pop(first_back))
        outbox.put_back_batch(taken.popitem()[1])
        assert drain(outbox) == [b"a", b"b", b"c", b"d", b"e", b"f"], first_back


def test_the_queue_is_read_without_taking_and_says_how_much_more_fits() -> None:
    outbox = Outbox(3, 60, FakeClock(), max_bytes=100)
    outbox.put("default", b"x" * 10)
    outbox.put("default", b"y" * 20)
    assert [bytes(item.payload)[:1] for item in outbox.queued()] == [b"x", b"y"]
    assert len(outbox) == 2
    assert outbox.room() == (1, 70)
