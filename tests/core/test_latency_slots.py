"""Latency slots: each process' recent latencies, added up by a sibling once each, whole."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relay.core.latency_slots import (
    MAX_SIBLINGS,
    LatencySlot,
    LatencySlots,
    LatencyTotal,
    SiblingLatencies,
)
from tests.support import FakeClock


def test_latencies_fall_in_slots_sent_once_finished() -> None:
    clock = FakeClock(10.0)
    slots = LatencySlots(clock, width=0.5, keep=2.0)
    slots.observe(0.002)
    clock.advance(0.2)
    slots.observe(0.006)
    assert slots.recent() == ()  # the slot may still grow
    clock.advance(0.5)
    slots.observe(0.001)
    assert slots.recent() == (LatencySlot(10.5, 2, 0.008, 0.006),)
    clock.advance(0.3)
    assert slots.recent()[-1] == LatencySlot(11.0, 1, 0.001, 0.001)


def test_slots_older_than_keep_are_forgotten() -> None:
    clock = FakeClock(10.0)
    slots = LatencySlots(clock, width=0.5, keep=2.0)
    slots.observe(0.002)
    clock.advance(2.6)
    assert slots.recent() == ()
    slots.observe(0.003)
    slots.configure(width=1.0, keep=4.0)
    clock.advance(5.0)
    assert slots.recent() == ()


def test_a_sampler_counts_each_siblings_new_slots_once() -> None:
    siblings = SiblingLatencies()
    first = (LatencySlot(1.0, 2, 0.004, 0.003),)
    assert siblings.take({"a": first}) == LatencyTotal(2, 0.004, 0.003)
    later = (*first, LatencySlot(2.0, 1, 0.010, 0.010))
    other = (LatencySlot(1.5, 1, 0.001, 0.001),)
    assert siblings.take({"a": later, "b": other}) == LatencyTotal(2, 0.011, 0.010)
    # A sibling that missed a round: its slots since are counted when it answers again.
    assert siblings.take({"a": later}) == LatencyTotal()
    assert LatencyTotal().plus(0, 5.0, 5.0) == LatencyTotal()


def test_siblings_remembered_are_bounded() -> None:
    siblings = SiblingLatencies()
    slot = (LatencySlot(1.0, 1, 0.001, 0.001),)
    for n in range(MAX_SIBLINGS + 1):
        siblings.take({f"w{n}": slot})
    # The first was forgotten: its slots count again (a restarted worker is a new one).
    assert siblings.take({"w0": slot}).count == 1
    assert siblings.take({f"w{MAX_SIBLINGS}": slot}).count == 0


@given(
    observed=st.lists(st.integers(0, 399), max_size=60),
    takes=st.lists(st.tuples(st.integers(1, 420), st.booleans()), min_size=1, max_size=30),
)
def test_a_sampler_counts_each_latency_once_whenever_it_asks_and_whatever_it_misses(
    observed: list[int], takes: list[tuple[int, bool]]
) -> None:
    """A sibling observes (times in 1/100 s); a sampler asks when it likes, not always answered."""
    clock = FakeClock(0.0)
    slots = LatencySlots(clock, width=0.25, keep=10.0)
    sampler = SiblingLatencies()
    events = sorted([(t, 0, True) for t in observed] + [(t, 1, ok) for t, ok in takes])
    counted = 0
    last = 0.0
    for t, kind, answered in events:
        clock.now = t / 100
        if kind == 0:
            slots.observe(0.001)
        elif answered:
            counted += sampler.take({"sibling": slots.recent()}).count
            last = clock.now
    # Everything whose slot ended by the last answer is counted, once.
    assert counted == sum(1 for t in observed if (t // 25 + 1) * 0.25 <= last)
