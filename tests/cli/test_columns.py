"""The one layout both CLI tables use: columns under headers, and named values."""

from __future__ import annotations

from relay.cli.columns import columns, pairs


def test_columns_align_under_their_headers_and_trim_the_right_edge() -> None:
    assert columns(
        ["PEER", "STATE", "LAST ERROR"], [["a:1", "up", ""], ["long:22", "x", "boom"]]
    ) == [
        "  PEER     STATE  LAST ERROR",
        "  a:1      up",
        "  long:22  x      boom",
    ]


def test_pairs_align_the_values_without_a_header() -> None:
    assert pairs([("uptime", "1h 2m"), ("browsers", "3 connected"), ("x", "")]) == [
        "  uptime    1h 2m",
        "  browsers  3 connected",
        "  x",
    ]
    assert pairs([]) == []
