"""Per-instance history bounded by count and age, and by bytes in all, on a fake clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relay.core.encoded import EncodedMessage
from relay.core.history import History, Place
from tests.support import FakeClock


def msg(text: str) -> EncodedMessage:
    return EncodedMessage(text.encode())


def payloads(messages: list[EncodedMessage]) -> list[bytes]:
    return [bytes(m.payload) for m in messages]


def test_replay_returns_matching_messages_in_order() -> None:
    clock = FakeClock()
    history = History(10, 60, clock)
    history.add("default", frozenset({"A"}), msg("1"))
    history.add("default", frozenset({"B"}), msg("2"))
    history.add("default", frozenset({"A", "C"}), msg("3"))
    assert payloads(history.replay("default", {"A"}, 60)) == [b"1", b"3"]
    assert payloads(history.replay("default", {"B", "C"}, 60)) == [b"2", b"3"]
    assert history.replay("default", set(), 60) == []


def test_replay_never_crosses_instances() -> None:
    history = History(10, 60, FakeClock())
    history.add("acme", frozenset({"A"}), msg("acme"))
    history.add("other", frozenset({"A"}), msg("other"))
    assert payloads(history.replay("acme", {"A"}, 60)) == [b"acme"]
    assert payloads(history.replay("other", {"A"}, 60)) == [b"other"]
    assert history.replay("third", {"A"}, 60) == []


def test_replay_age_limits_how_far_back() -> None:
    clock = FakeClock()
    history = History(10, 60, clock)
    history.add("default", frozenset({"A"}), msg("old"))
    clock.advance(30)
    history.add("default", frozenset({"A"}), msg("new"))
    clock.advance(5)
    assert payloads(history.replay("default", {"A"}, 10)) == [b"new"]
    assert payloads(history.replay("default", {"A"}, 60)) == [b"old", b"new"]


def test_count_bound_drops_the_oldest() -> None:
    history = History(3, 60, FakeClock())
    for n in range(5):
        history.add("default", frozenset({"A"}), msg(str(n)))
    assert payloads(history.replay("default", {"A"}, 60)) == [b"2", b"3", b"4"]
    assert history.size("default") == 3


def test_age_bound_expires_by_time_alone() -> None:
    clock = FakeClock()
    history = History(10, 60, clock)
    history.add("default", frozenset({"A"}), msg("1"))
    clock.advance(20)
    history.add("default", frozenset({"A"}), msg("2"))
    assert history.oldest_age("default") == 20
    clock.advance(45)
    assert history.size("default") == 1
    assert history.oldest_age("default") == 45
    clock.advance(16)
    history.expire()
    assert history.size("default") == 0
    assert history.oldest_age("default") is None
    assert history._by_instance == {}


def test_resize_keeps_the_newest_that_fit() -> None:
    clock = FakeClock()
    history = History(10, 60, clock)
    for n in range(6):
        history.add("default", frozenset({"A"}), msg(str(n)))
    history.resize(3, 60, 1 << 20)
    assert payloads(history.replay("default", {"A"}, 60)) == [b"3", b"4", b"5"]
    history.add("default", frozenset({"A"}), msg("6"))
    assert history.size("default") == 3
    history.resize(0, 60, 1 << 20)
    assert history.size("default") == 0


def test_zero_messages_disables_history() -> None:
    history = History(0, 60, FakeClock())
    history.add("default", frozenset({"A"}), msg("1"))
    assert history.size("default") == 0


def test_a_message_from_the_past_takes_its_place_in_time() -> None:
    clock = FakeClock()
    history = History(3, 60.0, clock)
    for name, at in (("b", clock.now - 5), ("d", None), ("a", clock.now - 10)):
        history.add("default", frozenset({"K"}), EncodedMessage(name.encode()), at)
    history.add("default", frozenset({"K"}), EncodedMessage(b"too-old"), clock.now - 61)
    assert payloads(history.replay("default", {"K"}, 60.0)) == [b"a", b"b", b"d"]
    # Full: one older than everything kept has no place; a newer one pushes the oldest out.
    history.add("default", frozenset({"K"}), EncodedMessage(b"oldest"), clock.now - 20)
    history.add("default", frozenset({"K"}), EncodedMessage(b"c"), clock.now - 1)
    assert payloads(history.replay("default", {"K"}, 60.0)) == [b"b", b"c", b"d"]


def test_a_message_delivered_in_the_clusters_order_goes_last_whatever_its_time() -> None:
    """One reloaded after a gap carries Redis' time, which may be before a live one's arrival."""
    clock = FakeClock()
    history = History(10, 60.0, clock)
    history.add("default", frozenset({"K"}), msg("came-live"))
    history.add("default", frozenset({"K"}), msg("reloaded"), clock.now - 0.001, place=Place.NEXT)
    assert payloads(history.replay("default", {"K"}, 60.0)) == [b"came-live", b"reloaded"]
    # Its time is raised to keep times in order: a replay of any age takes both or the later.
    clock.advance(10)
    assert payloads(history.replay("default", {"K"}, 10.0)) == [b"came-live", b"reloaded"]


def test_a_post_waiting_for_its_place_stays_last_until_the_broker_places_it() -> None:
    clock = FakeClock()
    history = History(10, 60.0, clock)
    history.add("default", frozenset({"K"}), msg("before"))
    clock.advance(1)
    history.add("default", frozenset({"K"}), msg("mine"), place=Place.WAITING)
    clock.advance(1)
    # Placed in Redis while this node was away; reloaded when it comes back.
    history.add("default", frozenset({"K"}), msg("theirs-0"), clock.now - 1.5, place=Place.NEXT)
    history.add("default", frozenset({"K"}), msg("theirs-1"), place=Place.NEXT)
    assert payloads(history.replay("default", {"K"}, 60.0)) == [
        b"before",
        b"theirs-0",
        b"theirs-1",
        b"mine",
    ]
    assert history.placed("default", b"mine")
    assert not history.placed("default", b"mine")  # a second copy: placed already
    history.add("default", frozenset({"K"}), msg("theirs-2"), place=Place.NEXT)
    assert payloads(history.replay("default", {"K"}, 60.0)) == [
        b"before",
        b"theirs-0",
        b"theirs-1",
        b"mine",
        b"theirs-2",
    ]


@given(
    st.lists(
        st.one_of(
            st.sampled_from([Place.NEXT, Place.WAITING, Place.IN_TIME]),
            st.integers(min_value=0, max_value=9),  # the broker returns the post made at step n
        ),
        max_size=40,
    )
)
def test_history_keeps_the_brokers_order_with_the_waiting_posts_last(
    steps: list[Place | int],
) -> None:
    """Against a model: placed messages in their order, then the waiting ones in theirs."""
    history = History(5, 60.0, FakeClock())
    placed: list[bytes] = []
    waiting: list[bytes] = []
    for n, step in enumerate(steps):
        payload = str(n).encode()
        if isinstance(step, int):
            returned = str(step).encode()
            assert history.placed("default", returned) == (returned in waiting)
            if returned in waiting:
                waiting.remove(returned)
                placed.append(returned)
            continue
        full = len(placed) + len(waiting) >= 5
        if full and step is not Place.WAITING and not placed:
            pass  # it would be the oldest in the broker's order: not kept
        else:
            if full:
                (placed or waiting).pop(0)
            (waiting if step is Place.WAITING else placed).append(payload)
        history.add("default", frozenset({"K"}), EncodedMessage(payload), place=step)
    assert payloads(history.replay("default", {"K"}, 60.0)) == placed + waiting


def test_history_exported_is_restored_with_its_ages_in_another_process() -> None:
    old_clock = FakeClock()
    old = History(10, 60, old_clock)
    old.add("acme", frozenset({"A"}), msg('{"n":1}'))
    old_clock.advance(30)
    old.add("acme", frozenset({"A", "B"}), msg('{"n":2}'))
    old.add("other", frozenset({"A"}), msg('{"n":3}'))
    records = old.export()
    assert records[0] == ["acme", 30.0, ["A"], '{"n":1}']
    # The new process' clock reads something else; the restart itself took 20 s.
    clock = FakeClock()
    clock.advance(1000)
    new = History(10, 60, clock)
    assert new.restore([*records, ["bad"], ["acme", "x", [], "{}"]], older_by=20) == 3
    assert payloads(new.replay("acme", {"A"}, 60)) == [b'{"n":1}', b'{"n":2}']
    assert payloads(new.replay("acme", {"A"}, 40)) == [b'{"n":2}']
    assert payloads(new.replay("other", {"A"}, 60)) == [b'{"n":3}']
    clock.advance(11)  # the first is past 60 s now
    assert payloads(new.replay("acme", {"B", "A"}, 60)) == [b'{"n":2}']


def sized(n: int, size: int) -> EncodedMessage:
    """A message whose frame is exactly ``size`` bytes (a 2-byte header under 126)."""
    return EncodedMessage(str(n).encode().ljust(size - 2, b" "))


def test_the_byte_bound_drops_an_instances_oldest_for_its_new_message() -> None:
    history = History(100, 60, FakeClock(), max_bytes=1000)
    for n in range(12):
        history.add("default", frozenset({"A"}), sized(n, 100))
    assert history.bytes == 1000
    assert [int(p) for p in payloads(history.replay("default", {"A"}, 60))] == list(range(2, 12))


def test_a_busy_instance_cannot_take_a_quiet_ones_history_away() -> None:
    """Past the bound, the instance holding the most gives up its oldest messages."""
    clock = FakeClock()
    history = History(100, 60, clock, max_bytes=1000)
    history.add("quiet", frozenset({"A"}), sized(0, 100))
    for n in range(600):  # ten minutes of a message a second
        history.add("busy", frozenset({"A"}), sized(n, 100))
        clock.advance(1)
        if n % 30 == 0:
            history.add("quiet", frozenset({"A"}), sized(n, 100))
    assert history.bytes == 1000
    assert history.size("quiet") == 2  # its last two (a minute's worth)
    assert history.size("busy") == 8


def test_room_comes_from_the_largest_instance_not_the_one_adding() -> None:
    history = History(100, 60, FakeClock(), max_bytes=1000)
    for n in range(3):
        history.add("small", frozenset({"A"}), sized(n, 100))
    for n in range(7):
        history.add("large", frozenset({"A"}), sized(n, 100))
    # "small" holds less than its share: "large" gives up its oldest.
    history.add("small", frozenset({"A"}), sized(3, 100))
    assert (history.size("small"), history.size("large")) == (4, 6)
    # A new instance is kept too, at the largest one's cost.
    history.add("new", frozenset({"A"}), sized(0, 100))
    assert (history.size("new"), history.size("large")) == (1, 5)


def test_a_message_from_the_past_with_no_room_in_the_bytes_is_not_kept() -> None:
    clock = FakeClock()
    history = History(100, 60, clock, max_bytes=300)
    for n in range(3):
        history.add("default", frozenset({"A"}), sized(n, 100), clock.now - 10 + n)
    history.add("default", frozenset({"A"}), sized(9, 100), clock.now - 20)
    assert [int(p) for p in payloads(history.replay("default", {"A"}, 60))] == [0, 1, 2]
    assert history.bytes == 300


def test_a_message_larger_than_the_bound_is_not_kept() -> None:
    history = History(100, 60, FakeClock(), max_bytes=1000)
    history.add("default", frozenset({"A"}), sized(0, 100))
    history.add("default", frozenset({"A"}), sized(1, 1001))
    assert history.size("default") == 1
    assert history.bytes == 100


def test_resize_to_fewer_bytes_keeps_the_newest_and_expiry_gives_bytes_back() -> None:
    clock = FakeClock()
    history = History(100, 60, clock, max_bytes=1000)
    for n in range(8):
        history.add("default", frozenset({"A"}), sized(n, 100))
    history.add("other", frozenset({"A"}), sized(0, 100))
    history.resize(100, 60, 500)
    # The largest gives up its oldest first: the other instance keeps its one.
    assert [int(p) for p in payloads(history.replay("default", {"A"}, 60))] == [4, 5, 6, 7]
    assert history.size("other") == 1
    assert history.bytes == 500
    clock.advance(61)
    history.expire()
    assert history.bytes == 0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),  # instance
            st.integers(min_value=3, max_value=400),  # frame size
            st.integers(min_value=-30, max_value=0),  # arrived this long ago
            st.integers(min_value=0, max_value=20),  # then the clock moves on
            st.sampled_from([None, None, None, "expire", "resize"]),
        ),
        max_size=80,
    )
)
def test_the_bytes_kept_are_the_frames_kept_and_within_every_bound(
    steps: list[tuple[str, int, int, int, str | None]],
) -> None:
    clock = FakeClock()
    history = History(5, 60, clock, max_bytes=1000)
    for n, (instance, size, ago, later, also) in enumerate(steps):
        history.add(instance, frozenset({"A"}), sized(n, size), clock.now + ago)
        clock.advance(later)
        if also == "expire":
            history.expire()
        elif also == "resize":
            history.resize(4, 60, 700)
        history.expire()
        kept = {i: history.replay(i, {"A"}, 60) for i in "abc"}
        assert history.bytes == sum(len(m.frame) for ms in kept.values() for m in ms)
        assert history.bytes <= history._max_bytes
        assert all(len(ms) <= history._max_messages for ms in kept.values())
