"""Remembering seen message identities, on a fake clock."""

from __future__ import annotations

from relay.core.dedup import RecentIds
from tests.support import FakeClock


def test_second_sighting_within_the_window_is_a_repeat() -> None:
    recent = RecentIds(60, 100, FakeClock())
    assert recent.first_sighting("a") is True
    assert recent.first_sighting("a") is False
    assert recent.first_sighting("b") is True


def test_identities_are_forgotten_after_the_window() -> None:
    clock = FakeClock()
    recent = RecentIds(60, 100, clock)
    recent.first_sighting("a")
    clock.advance(59)
    recent.first_sighting("b")
    assert recent.first_sighting("a") is False
    clock.advance(2)
    assert recent.first_sighting("a") is True
    assert len(recent) == 2


def test_memory_is_bounded_by_capacity() -> None:
    recent = RecentIds(60, 3, FakeClock())
    for identity in "abcde":
        recent.first_sighting(identity)
    assert len(recent) == 3
    # The two oldest were forgotten, the three newest are still known.
    assert [recent.first_sighting(identity) for identity in "edc"] == [False, False, False]
    assert recent.first_sighting("a") is True
