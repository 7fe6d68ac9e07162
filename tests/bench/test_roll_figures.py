"""The 100k-roll scenario's figures: the roll's timings from the log, workers, memory, posts."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from bench.handoff_nodes import set_version
from bench.roll_figures import (
    finished,
    memory_change,
    roll_timing,
    slow_posts,
    successors,
    worker_table,
)

SINCE = datetime(2026, 12, 6, 21, 0, 0).timestamp()


def line(seconds: float, name: str, message: str) -> str:
    """A relay log line ``seconds`` after ``SINCE``, as the node writes it (local time)."""
    stamp = datetime.fromtimestamp(SINCE + seconds)
    return f"{stamp:%Y-%m-%d %H:%M:%S},{stamp.microsecond // 1000:03d} INFO {name}: {message}\n"


SUP = "relay.workers"

ROLL = [
    line(0.5, SUP, "received SIGUSR2, replacing the 2 workers in turn"),
    line(0.6, SUP, "worker 0 (pid 100): started the new code (pid 200) to take over"),
    line(3.0, "relay.handoff [worker 0]", "handing over to relay 0.1.0+b (pid 200)"),
    line(4.0, "relay.handoff [worker 0]", "handoff done: 1000 browser connections moved"),
    line(4.1, "relay.handoff [worker 0]", "took over 1000 browser connections"),
    # Another worker's lines in between belong to it, not to the worker being replaced.
    line(4.2, "relay.handoff [worker 1]", "handoff done: 7 browser connections moved"),
    line(4.5, SUP, "worker 0 replaced: pid 100 -> pid 200"),
    line(4.6, SUP, "worker 1 (pid 101): started the new code (pid 201) to take over"),
    line(7.0, "relay.handoff [worker 1]", "handing over to relay 0.1.0+b (pid 201)"),
    line(8.0, "relay.handoff [worker 1]", "handoff done: 990 browser connections moved"),
    line(8.1, "relay.handoff [worker 1]", "took over 990 browser connections"),
    line(8.5, SUP, "worker 1 replaced: pid 101 -> pid 201"),
    line(8.5, SUP, "all 2 workers replaced by the new code"),
]


def test_roll_timing_gives_the_total_and_each_worker_in_turn() -> None:
    timing = roll_timing(ROLL, SINCE)
    assert timing["began_s"] == 0.5
    assert timing["total_s"] == 8.0
    first, second = timing["workers"]
    assert first == {
        "index": 0,
        "old_pid": 100,
        "new_pid": 200,
        "started_s": 0.6,
        "hello_s": 3.0,
        "replaced_s": 4.5,
        "seconds": 3.9,
        "moved": 1000,
        "took_over": 1000,
    }
    assert (second["index"], second["new_pid"], second["seconds"]) == (1, 201, 3.9)
    assert (second["moved"], second["took_over"]) == (990, 990)


def test_an_unfinished_roll_has_no_total_and_the_worker_under_way_no_end() -> None:
    timing = roll_timing(ROLL[:4], SINCE)
    assert timing["total_s"] is None
    [worker] = timing["workers"]
    assert (worker["replaced_s"], worker["seconds"], worker["moved"]) == (None, None, 1000)
    assert roll_timing([], SINCE) == {"began_s": None, "total_s": None, "workers": []}


def test_successors_and_the_roll_s_end_are_read_as_they_come() -> None:
    assert successors(ROLL[:2]) == [(0, 200)]
    assert successors(ROLL) == [(0, 200), (1, 201)]
    assert finished(ROLL[:-1]) is None
    assert finished(ROLL) == "done"
    stopped = line(9.0, SUP, "upgrade of the workers stopped at worker 1: 1 of 2 replaced; ...")
    assert finished([*ROLL[:-2], stopped]) == "stopped"


def test_worker_table_keeps_what_the_results_show_or_the_reason_it_is_missing() -> None:
    status = {
        "workers": [
            {"index": 0, "pid": 200, "version": "0.1.0+b", "connections": 5, "state": "serving"},
            {"index": 1, "state": "not answering"},
        ]
    }
    assert worker_table(status) == [
        {"index": 0, "pid": 200, "version": "0.1.0+b", "connections": 5, "state": "serving"},
        {"index": 1, "pid": None, "version": None, "connections": None, "state": "not answering"},
    ]
    assert worker_table("unread: timed out") == "unread: timed out"


def test_memory_change_sets_the_sums_side_by_side() -> None:
    before = {"rss_mib": 400.0, "pss_mib": 300.0, "anon_mib": 280.0, "per_process_pss_mib": [1.0]}
    after = {"rss_mib": 390.5, "pss_mib": 301.2, "anon_mib": 270.0, "per_process_pss_mib": [2.0]}
    change = memory_change(before, after)
    assert change["rss_sum_mib"] == {"before": 400.0, "after": 390.5, "change": -9.5}
    assert change["pss_sum_mib"]["change"] == 1.2
    assert change["per_process_pss_mib"] == {"before": [1.0], "after": [2.0]}


def test_slow_posts_count_those_still_unanswered_when_the_next_one_left() -> None:
    report = {"started": 100.0, "slow": [[5, 5.0, 0.7], [9, 9.0, 1.2]]}
    figures = slow_posts(report, interval=1.0, since=110.0)
    assert figures["answered_after_0_5_s"] == 2
    assert figures["still_unanswered_when_next_sent"] == 1
    example = {"seq": 9, "sent_s_from_sigusr2": -1.0, "answered_after_s": 1.2}
    assert figures["examples"][1] == example
    assert slow_posts({"started": 0.0}, 1.0, 0.0)["answered_after_0_5_s"] == 0


def test_set_version_upgrades_a_copy_in_place_replacing_an_earlier_suffix(tmp_path: Path) -> None:
    package = tmp_path / "relay"
    package.mkdir()
    (package / "__init__.py").write_text('"""relay."""\n\n__version__ = "1.2.3"\nX = 1\n')
    assert set_version(tmp_path, "+before") == "1.2.3+before"
    assert set_version(tmp_path, "+after") == "1.2.3+after"
    assert '__version__ = "1.2.3+after"\nX = 1\n' in (package / "__init__.py").read_text()
    assert list((package / "__pycache__").glob("__init__.*.pyc"))


def test_set_version_refuses_a_package_without_a_version(tmp_path: Path) -> None:
    (tmp_path / "relay").mkdir()
    (tmp_path / "relay" / "__init__.py").write_text('"""relay."""\n')
    with pytest.raises(RuntimeError, match="no __version__ line"):
        set_version(tmp_path, "+x")
