"""How the CLI words durations (one formatter for both tables) and counts."""

from __future__ import annotations

import pytest

from relay.cli.wording import counted, format_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (-3, "0 s"),  # two machines' clocks apart
        (0.44, "0.4 s"),
        (12.5, "12.5 s"),
        (45, "45 s"),
        (59.96, "1m"),  # rounds to a minute, not to "60 s"
        (95, "1m 35s"),
        (900, "15m"),
        (3723, "1h 2m"),
        (7200, "2h"),
        (3 * 86_400 + 4 * 3600 + 59, "3d 4h"),
        (200_000, "2d 7h"),
    ],
)
def test_durations_read_in_their_two_largest_units(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_counts_read_right_for_one_and_for_many() -> None:
    assert counted(1, "listener") == "1 listener"
    assert counted(0, "listener") == "0 listeners"
    assert counted(2, "peer") == "2 peers"
    assert counted(1, "entry", "entries") == "1 entry"
    assert counted(3, "entry", "entries") == "3 entries"
