"""What the ``handoff`` scenario's raw readings mean: phases, timings, joins, who held whom.

Pure: these functions take what was sampled or reported (times in monotonic
seconds or nanoseconds, descriptor counts, latencies) and return the figures
the results show, so they are tested without a node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from bench.harness import percentiles

#: The three windows a delivery falls in, by when its message was posted.
PHASES = ("before", "during", "after")
#: What the old process logs when its successor says hello, and when it is done.
LOGGED = ("handing over to relay", "handoff done")
#: Descriptors a relay process may hold besides browsers once all have moved
#: (the handoff channel, the duplicated listening sockets, one browser in its handshake).
MOVED_MARGIN = 16


def split_by_phase(
    sent_ns: np.ndarray, latencies_ms: np.ndarray, began_ns: int, ended_ns: int
) -> dict[str, np.ndarray]:
    """The latencies of messages posted before, during and after ``[began_ns, ended_ns)``.

    ``sent_ns[i]`` is when the message of delivery ``i`` was posted; the two
    arrays are the same length.

    Raises:
        ValueError: the arrays differ in length.
    """
    if sent_ns.shape != latencies_ms.shape:
        raise ValueError("one post time per latency is needed")
    before = sent_ns < began_ns
    after = sent_ns >= ended_ns
    during = ~before & ~after
    return {
        "before": latencies_ms[before],
        "during": latencies_ms[during],
        "after": latencies_ms[after],
    }


def phase_latencies(phases: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per phase: deliveries and their p50, p90, p99, max and mean (ms)."""
    return {name: {"deliveries": int(v.size), **percentiles(v)} for name, v in phases.items()}


@dataclass(frozen=True)
class Sample:
    """One reading during the handoff: when, and each process's open descriptors."""

    t: float
    #: None once the process has exited (or before it started).
    old_fds: int | None
    new_fds: int | None


def held(fds: int | None, base: int) -> int:
    """Browsers a relay process holds: its descriptors beyond ``base`` (0 if it is gone)."""
    return max(0, fds - base) if fds is not None else 0


def timing(
    samples: Sequence[Sample], *, began: float, old_exit: float, base_fds: int, browsers: int
) -> dict[str, float | None]:
    """When the browsers began to move, when all had, and when the old process exited.

    Seconds from ``began`` (the successor started). ``base_fds`` is what a
    relay process holds with no browser; ``browsers`` how many the old one
    held when the handoff began. A moment not seen in the samples is None.
    """
    first_move = all_moved = adopted = None
    for sample in samples:
        if sample.t < began:
            continue
        left = held(sample.old_fds, base_fds)
        if first_move is None and left < browsers - MOVED_MARGIN:
            first_move = sample.t - began
        if all_moved is None and left <= MOVED_MARGIN:
            all_moved = sample.t - began
        if adopted is None and held(sample.new_fds, base_fds) >= browsers - MOVED_MARGIN:
            adopted = sample.t - began
    return {
        "first_browser_moved": _round(first_move),
        "all_left_old": _round(all_moved),
        "all_adopted": _round(adopted),
        "old_exited": round(old_exit - began, 2),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def joins(
    attempts: Sequence[Sequence[Any]], began: float, ended: float
) -> dict[str, dict[str, Any] | str]:
    """Browsers opened during the posting, by phase: attempts, outcomes, connect time.

    Each attempt is ``(began, ended, outcome)``, ``outcome`` ``"ok"`` or the
    error's name; it belongs to the phase in which it began. Returns
    ``joins_before`` ... ``joins_after`` and ``joins_failed_by_error``.
    """
    figures: dict[str, dict[str, Any] | str] = {}
    errors: Counter[str] = Counter()
    for phase in PHASES:
        mine = [a for a in attempts if _phase_of(float(a[0]), began, ended) == phase]
        outcomes = Counter(str(a[2]) for a in mine)
        ok = outcomes.pop("ok", 0)
        errors.update({f"{phase} {error}": n for error, n in outcomes.items()})
        ms = np.array([(float(a[1]) - float(a[0])) * 1e3 for a in mine if a[2] == "ok"])
        spread = percentiles(ms)
        figures[f"joins_{phase}"] = {
            "attempts": len(mine),
            "ok": ok,
            "failed": sum(outcomes.values()),
            "connect_p50_ms": spread["p50"],
            "connect_p99_ms": spread["p99"],
            "connect_max_ms": spread["max"],
        }
    figures["joins_failed_by_error"] = dict(errors) or "none"
    return figures


def logged_seconds(lines: Sequence[str], since: float) -> dict[str, float | None]:
    """When the old process logged the handoff's start and end, in seconds from ``since``.

    ``lines`` are relay's log lines (``2026-12-06 20:35:24,019 INFO ...``, local
    time); ``since`` is a wall-clock time (``time.time()``). A line not found is None.
    """
    found: dict[str, float | None] = dict.fromkeys(LOGGED)
    for line in lines:
        for marker in LOGGED:
            if found[marker] is None and marker in line:
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                found[marker] = round(stamp - since, 2)
    return found


def _phase_of(t: float, began: float, ended: float) -> str:
    if t < began:
        return "before"
    return "during" if t < ended else "after"


def timeline(samples: Sequence[Sample], *, since: float, base_fds: int) -> dict[str, list[float]]:
    """The plot's series: seconds from ``since``, and the browsers each process held."""
    return {
        "t": [round(s.t - since, 2) for s in samples],
        "old_browsers": [float(held(s.old_fds, base_fds)) for s in samples],
        "new_browsers": [float(held(s.new_fds, base_fds)) for s in samples],
    }
