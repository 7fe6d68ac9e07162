"""What the ``100k-roll`` scenario's raw readings mean: the roll's timings, who replaced whom.

Pure: these functions take the node's log lines (the supervisor's and its
workers', interleaved on one stream) and its ``/status/`` ``workers`` list,
and return the figures the results show, so they are tested without a node.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

#: What the supervisor logs as a roll goes (``relay.workers.roll``).
ROLL_BEGAN = re.compile(r"received SIGUSR2, replacing the (\d+) workers in turn")
SUCCESSOR_STARTED = re.compile(
    r"worker (\d+) \(pid (\d+)\): started the new code \(pid (\d+)\) to take over"
)
REPLACED = re.compile(r"worker (\d+) replaced: pid (\d+) -> pid (\d+)")
ROLL_DONE = re.compile(r"all (\d+) workers replaced by the new code")
ROLL_STOPPED = re.compile(r"upgrade of the workers stopped at worker (\d+)")
#: What each worker logs about its own handoff (``relay.handoff``), tagged ``[worker N]``.
WORKER_TAG = re.compile(r"\[worker (\d+)\]")
HELLO = "handing over to relay"
MOVED = re.compile(r"handoff done: (\d+) browser connections moved")
TOOK_OVER = re.compile(r"took over (\d+) browser connections")


def _stamp(line: str) -> float:
    """The wall-clock time of a relay log line (``2026-12-06 20:35:24,019 INFO ...``, local)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def successors(lines: Sequence[str]) -> list[tuple[int, int]]:
    """Each successor the supervisor started, in order: ``(worker index, pid)``.

    The coordinator puts each into a CPU quota as soon as it sees it here.
    """
    found = []
    for line in lines:
        match = SUCCESSOR_STARTED.search(line)
        if match:
            found.append((int(match.group(1)), int(match.group(3))))
    return found


def finished(lines: Sequence[str]) -> str | None:
    """``"done"`` once the supervisor logged every worker replaced, ``"stopped"`` if it gave up."""
    for line in lines:
        if ROLL_DONE.search(line):
            return "done"
        if ROLL_STOPPED.search(line):
            return "stopped"
    return None


def _r(value: float) -> float:
    return round(value, 2)


def roll_timing(lines: Sequence[str], since: float) -> dict[str, Any]:
    """The roll from the node's log: in seconds from ``since`` (a ``time.time()``).

    Returns ``total_s`` (SIGUSR2 logged to the last worker replaced, None if
    the roll did not finish), ``began_s``, and per worker (in the order the
    supervisor went through them) its index, old and new pid, when its
    successor started and when it was replaced, the seconds between, when
    the old worker logged its successor's hello, and the counts both
    processes logged (moved by the old one, taken over by the new one).
    """
    began = done = None
    workers: dict[int, dict[str, Any]] = {}
    for line in lines:
        if began is None and ROLL_BEGAN.search(line):
            began = _stamp(line) - since
        if done is None and ROLL_DONE.search(line):
            done = _stamp(line) - since
        started = SUCCESSOR_STARTED.search(line)
        if started:
            index = int(started.group(1))
            workers[index] = {
                "index": index,
                "old_pid": int(started.group(2)),
                "new_pid": int(started.group(3)),
                "started_s": _r(_stamp(line) - since),
                "hello_s": None,
                "replaced_s": None,
                "seconds": None,
                "moved": None,
                "took_over": None,
            }
            continue
        replaced = REPLACED.search(line)
        if replaced and int(replaced.group(1)) in workers:
            entry = workers[int(replaced.group(1))]
            entry["replaced_s"] = _r(_stamp(line) - since)
            entry["seconds"] = _r(entry["replaced_s"] - entry["started_s"])
            continue
        tag = WORKER_TAG.search(line)
        if tag is None or int(tag.group(1)) not in workers:
            continue
        entry = workers[int(tag.group(1))]
        moved, took = MOVED.search(line), TOOK_OVER.search(line)
        if HELLO in line and entry["hello_s"] is None:
            entry["hello_s"] = _r(_stamp(line) - since)
        elif moved:
            entry["moved"] = int(moved.group(1))
        elif took:
            entry["took_over"] = int(took.group(1))
    return {
        "began_s": None if began is None else _r(began),
        "total_s": None if began is None or done is None else _r(done - began),
        "workers": list(workers.values()),
    }


def worker_table(status: dict[str, Any] | str) -> list[dict[str, Any]] | str:
    """The node's ``/status/`` ``workers``: each one's index, pid, version and browsers.

    ``status`` is the parsed page, or the reason it could not be read (returned as it is).
    """
    if isinstance(status, str):
        return status
    return [
        {
            "index": worker.get("index"),
            "pid": worker.get("pid"),
            "version": worker.get("version"),
            "connections": worker.get("connections"),
            "state": worker.get("state"),
        }
        for worker in status.get("workers", [])
    ]


def memory_change(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The node's RSS and PSS sums (``footprint.node_memory``) before and after, and the change."""
    figures: dict[str, Any] = {}
    for kind in ("rss", "pss", "anon"):
        key = f"{kind}_mib"
        figures[f"{kind}_sum_mib"] = {
            "before": before[key],
            "after": after[key],
            "change": round(after[key] - before[key], 1),
        }
    figures["per_process_pss_mib"] = {
        "before": before["per_process_pss_mib"],
        "after": after["per_process_pss_mib"],
    }
    return figures


def slow_posts(report: dict[str, Any], interval: float, since: float) -> dict[str, Any]:
    """A poster's posts answered late (its ``slow``), and how many the next post overtook.

    ``report`` is a paced poster's report (``started`` in monotonic seconds,
    ``slow`` as ``[seq, sent_s, answer_s]`` from its start); ``interval`` the
    seconds between its posts; ``since`` the roll's start (monotonic). A post
    not answered when the next one left may be placed after it: then the
    browsers see the two in the other order, and no promise was broken.
    """
    slow = report.get("slow", [])
    overtakable = [s for s in slow if s[2] > interval]
    return {
        "answered_after_0_5_s": len(slow),
        "still_unanswered_when_next_sent": len(overtakable),
        "examples": [
            {
                "seq": int(seq),
                "sent_s_from_sigusr2": round(report["started"] + sent - since, 2),
                "answered_after_s": answer,
            }
            for seq, sent, answer in slow[:10]
        ],
    }
