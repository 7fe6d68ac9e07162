"""The 5-in-a-row health state machine, on a clock the test controls."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.cluster_status.verdicts.health import HEALTH_WINDOW, HealthChange, HealthTracker


def feed(tracker: HealthTracker, results: list[bool], start: float = 0.0) -> list[HealthChange]:
    changes = []
    for step, result in enumerate(results):
        change = tracker.record(result, start + 3.0 * step)
        if change is not None:
            changes.append(change)
    return changes


def test_starts_healthy_like_phorge() -> None:
    tracker = HealthTracker()
    assert tracker.healthy
    assert (tracker.up, tracker.down, tracker.changed_at) == (0, 0, None)


def test_five_failures_make_it_unhealthy_and_five_successes_healthy_again() -> None:
    tracker = HealthTracker()
    assert feed(tracker, [False] * 4) == []
    assert tracker.healthy  # four are not enough
    change = tracker.record(False, 12.0)
    assert change == HealthChange(healthy=False, at=12.0)
    assert not tracker.healthy
    assert (tracker.up, tracker.down, tracker.changed_at) == (0, 5, 12.0)
    changes = feed(tracker, [True] * 5, start=15.0)
    assert changes == [HealthChange(healthy=True, at=27.0)]
    assert tracker.healthy


def test_mixed_results_leave_the_state_alone() -> None:
    tracker = HealthTracker()
    feed(tracker, [False] * 5)
    assert feed(tracker, [True, True, False, True, True, True, True, False]) == []
    assert not tracker.healthy


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        HealthTracker(window=0)


@given(st.lists(st.booleans(), max_size=60))
def test_state_matches_the_last_uniform_window(results: list[bool]) -> None:
    tracker = HealthTracker()
    changes = feed(tracker, results)
    # Reference: the state is the value of the most recent window of five
    # identical results, or the initial "healthy" if there was none.
    expected = True
    for end in range(HEALTH_WINDOW, len(results) + 1):
        window = results[end - HEALTH_WINDOW : end]
        if len(set(window)) == 1:
            expected = window[0]
    assert tracker.healthy == expected
    # Changes alternate and each one really changes the state.
    states = [True] + [c.healthy for c in changes]
    assert all(a != b for a, b in itertools.pairwise(states))
    recent = results[-HEALTH_WINDOW:]
    assert (tracker.up, tracker.down) == (sum(recent), len(recent) - sum(recent))
