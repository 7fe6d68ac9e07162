"""The handoff scenario's figures: phases, timings, joins and log times from raw readings."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from bench.handoff_figures import (
    MOVED_MARGIN,
    Sample,
    held,
    joins,
    logged_seconds,
    phase_latencies,
    split_by_phase,
    timeline,
    timing,
)


def test_deliveries_fall_in_the_phase_their_message_was_posted_in() -> None:
    sent = np.array([5, 10, 15, 20, 25], dtype=np.int64)
    latencies = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    phases = split_by_phase(sent, latencies, began_ns=10, ended_ns=20)
    # The start belongs to "during", the end to "after".
    assert phases["before"].tolist() == [1.0]
    assert phases["during"].tolist() == [2.0, 3.0]
    assert phases["after"].tolist() == [4.0, 5.0]
    with pytest.raises(ValueError, match="one post time per latency"):
        split_by_phase(sent[:2], latencies, 10, 20)


def test_phase_latencies_count_and_spread_even_an_empty_phase() -> None:
    figures = phase_latencies({"before": np.array([1.0, 3.0]), "during": np.empty(0)})
    assert figures["before"]["deliveries"] == 2
    assert figures["before"]["p50"] == 2.0
    assert figures["before"]["max"] == 3.0
    assert figures["during"] == {
        "deliveries": 0,
        "p50": None,
        "p90": None,
        "p99": None,
        "max": None,
        "mean": None,
    }


def test_held_is_descriptors_beyond_an_idle_node() -> None:
    assert held(1030, base=30) == 1000
    assert held(20, base=30) == 0
    assert held(None, base=30) == 0


def test_timing_finds_first_move_all_moved_all_adopted_and_exit() -> None:
    base, browsers = 30, 1000
    samples = [
        Sample(9.0, base + browsers, None),  # before the successor starts: ignored
        Sample(10.0, base + browsers, None),
        Sample(10.5, base + browsers, base),  # the successor is up, nothing moved yet
        Sample(11.0, base + 600, base + 400),
        Sample(11.5, base + 5, base + 990),  # within the margin: all moved
        Sample(12.0, base + 3, base + browsers),
        Sample(12.5, None, base + browsers),
    ]
    assert timing(samples, began=10.0, old_exit=12.4, base_fds=base, browsers=browsers) == {
        "first_browser_moved": 1.0,
        "all_left_old": 1.5,
        "all_adopted": 1.5,
        "old_exited": 2.4,
    }


def test_timing_leaves_a_moment_it_did_not_see_empty() -> None:
    samples = [Sample(10.0, 1030, 30), Sample(10.1, 1030 - MOVED_MARGIN, 30)]
    assert timing(samples, began=10.0, old_exit=11.0, base_fds=30, browsers=1000) == {
        "first_browser_moved": None,  # only the margin's worth left: not yet a move
        "all_left_old": None,
        "all_adopted": None,
        "old_exited": 1.0,
    }


def test_joins_by_phase_with_failures_named() -> None:
    attempts = [
        (1.0, 1.002, "ok"),
        (10.0, 10.004, "ok"),
        (10.5, 10.6, "ConnectionRefusedError"),
        (11.0, 11.001, "ok"),
        (20.0, 20.010, "ok"),
    ]
    figures = joins(attempts, began=10.0, ended=20.0)
    assert figures["joins_before"] == {
        "attempts": 1,
        "ok": 1,
        "failed": 0,
        "connect_p50_ms": 2.0,
        "connect_p99_ms": 2.0,
        "connect_max_ms": 2.0,
    }
    during = figures["joins_during"]
    assert isinstance(during, dict)
    assert (during["attempts"], during["ok"], during["failed"]) == (3, 2, 1)
    assert during["connect_max_ms"] == 4.0  # the refused one has no connect time
    after = figures["joins_after"]
    assert isinstance(after, dict)
    assert after["attempts"] == 1
    assert figures["joins_failed_by_error"] == {"during ConnectionRefusedError": 1}
    assert joins([], 0.0, 1.0)["joins_failed_by_error"] == "none"


def test_logged_seconds_from_relays_log_lines() -> None:
    since = datetime(2026, 12, 6, 20, 35, 20).timestamp()
    lines = [
        "2026-12-06 20:35:24,019 INFO relay.handoff: handing over to relay 0.2 (pid 7)\n",
        "2026-12-06 20:35:38,597 INFO relay.handoff: handoff done: 18005 browser connections\n",
        "2026-12-06 20:35:39,000 INFO relay.handoff: handoff done: a second one is ignored\n",
    ]
    assert logged_seconds(lines, since) == {"handing over to relay": 4.02, "handoff done": 18.6}
    assert logged_seconds([], since) == {"handing over to relay": None, "handoff done": None}


def test_timeline_counts_browsers_from_a_start() -> None:
    samples = [Sample(100.0, 1030, None), Sample(100.5, 30, 1030)]
    assert timeline(samples, since=90.0, base_fds=30) == {
        "t": [10.0, 10.5],
        "old_browsers": [1000.0, 0.0],
        "new_browsers": [0.0, 1000.0],
    }
