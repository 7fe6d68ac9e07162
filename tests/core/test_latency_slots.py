"""Latency slots: each process' recent latencies, added up by another exactly once per slot."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relay.core.latency_slots import LatencySlot, LatencySlots, LatencyTotal, in_window
from tests.support import FakeClock


def test_latencies_fall_in_slots_with_their_count_sum_and_max() -> None:
    clock = FakeClock(10.0)
    slots = LatencySlots(clock, width=0.5, keep=2.0)
    slots.observe(0.002)
    clock.advance(0.2)
    slots.observe(0.006)
    clock.advance(0.5)
    slots.observe(0.001)
    assert slots.recent() == (
        LatencySlot(10.5, 2, 0.008, 0.006),
        LatencySlot(11.0, 1, 0.001, 0.001),
    )


def test_slots_older_than_keep_are_forgotten() -> None:
    clock = FakeClock(10.0)
    slots = LatencySlots(clock, width=0.5, keep=2.0)
    slots.observe(0.002)
    clock.advance(2.6)
    assert slots.recent() == ()
    slots.observe(0.003)
    slots.configure(width=1.0, keep=4.0)
    assert slots.recent() == ()


def test_a_window_adds_up_the_slots_that_ended_in_it() -> None:
    found = [LatencySlot(1.0, 2, 0.004, 0.003), LatencySlot(2.0, 1, 0.010, 0.010)]
    assert in_window(found, 0.0, 1.5) == LatencyTotal(2, 0.004, 0.003)
    assert in_window(found, 1.0, 2.0) == LatencyTotal(1, 0.010, 0.010)
    assert in_window(found, 2.0, 9.0) == LatencyTotal()
    assert LatencyTotal().plus(0, 5.0, 5.0) == LatencyTotal()


@given(
    observed=st.lists(st.integers(0, 399), max_size=60),
    samples=st.lists(st.integers(1, 420), min_size=1, max_size=30),
)
def test_a_sampler_counts_each_latency_once_whenever_it_samples(
    observed: list[int], samples: list[int]
) -> None:
    """One process observes (times in 1/100 s); another samples whenever it likes."""
    clock = FakeClock(0.0)
    slots = LatencySlots(clock, width=0.25, keep=10.0)
    events = sorted([(t, 0) for t in observed] + [(t, 1) for t in samples])
    counted = 0
    after = float("-inf")
    for t, kind in events:
        clock.now = t / 100
        if kind == 0:
            slots.observe(0.001)
        else:
            counted += in_window(slots.recent(), after, clock.now).count
            after = clock.now
    # Everything whose slot ended by the last sample is counted, once.
    last = max(samples) / 100
    assert counted == sum(1 for t in observed if (t // 25 + 1) * 0.25 <= last)
