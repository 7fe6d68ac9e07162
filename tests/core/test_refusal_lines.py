"""One log line per kind of refusal per interval, on a fake clock."""

from __future__ import annotations

from relay.core.refusal_lines import RefusalLines
from tests.support import FakeClock


def test_the_first_refusal_of_a_kind_is_reported_at_once() -> None:
    lines = RefusalLines(10, FakeClock())
    assert lines.due("secret") == 1
    assert lines.due("network") == 1  # another kind has its own interval


def test_refusals_within_the_interval_are_counted_into_the_next_line() -> None:
    clock = FakeClock()
    lines = RefusalLines(10, clock)
    assert lines.due("secret") == 1
    for _ in range(41):
        clock.advance(0.1)
        assert lines.due("secret") == 0
    clock.advance(10)
    # This one and the 41 left out since the last line.
    assert lines.due("secret") == 42
    assert lines.due("secret") == 0


def test_a_quiet_kind_reports_its_next_refusal_alone() -> None:
    clock = FakeClock()
    lines = RefusalLines(10, clock)
    lines.due("post")
    clock.advance(60)
    assert lines.due("post") == 1
