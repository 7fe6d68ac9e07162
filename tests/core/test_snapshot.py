"""The snapshot's ``/status/`` entries that are computed, not copied: the process entry."""

from __future__ import annotations

from relay.core.snapshot import NodeSnapshot, ProcessReading


def test_the_process_entry_gives_the_start_in_iso_8601_utc() -> None:
    reading = ProcessReading("0.2.0", 1_796_581_200.75, 4242, 17)
    assert reading.status() == {
        "version": "0.2.0",
        "started_at": "2026-12-06T18:20:00Z",
        "pid": 4242,
        "adopted": 17,
    }


def test_status_has_the_process_entry_only_when_the_snapshot_has_one() -> None:
    bare = NodeSnapshot("fp", 0, 0, {}, 0, {}, [], None)
    assert "process" not in bare.status("default")
    reading = ProcessReading("0.2.0", 0.0, 1, 0)
    with_process = NodeSnapshot("fp", 0, 0, {}, 0, {}, [], None, process=reading)
    assert with_process.status("default")["process"]["started_at"] == "1970-01-01T00:00:00Z"
