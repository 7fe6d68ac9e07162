"""The burst summary: read time and kernel arrival side by side, each side's rounds, the note."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.burst import _summary, least_disturbed
from bench.harness import Group
from bench.scenarios import Outcome


def _latency(p99: float, arrival_p99: float | None, other: float) -> Outcome:
    figures: dict[str, Any] = {
        "latency_ms": {"p50": 10.0, "p99": p99, "max": p99 + 5},
        "lost": 0,
        "machine_busy": 0.1,
        "other_cpu_s": other,
    }
    if arrival_p99 is not None:
        figures["arrival_latency_ms"] = {"p50": 5.0, "p99": arrival_p99, "max": arrival_p99 + 1}
    return Outcome(result={"figures": figures}, latencies={})


def _cpu(us: float) -> Outcome:
    figures = {"server_cpu_us_per_delivery": us, "lost": 0, "machine_busy": 0.5, "other_cpu_s": 0.0}
    return Outcome(result={"figures": figures}, latencies={})


def test_arrival_is_set_beside_the_read_time_with_every_round_and_a_note() -> None:
    runs = {
        "burst-after": [_latency(30.0, 12.0, 1.0), _latency(40.0, 20.0, 0.0)],
        "burst-cpu-after": [_cpu(3.0)],
    }
    kept = {"burst-after": runs["burst-after"][1], "burst-cpu-after": runs["burst-cpu-after"][0]}
    figures = _summary("burst", kept, runs, ["after"]).result["figures"]
    assert figures["latency_ms_after"] == {"p50": 10.0, "p99": 40.0, "max": 45.0}
    assert figures["arrival_ms_after"] == {"p50": 5.0, "p99": 20.0, "max": 21.0}
    assert figures["arrival_every_round_after"] == ["5.0/12.0/13.0 (1.0)", "5.0/20.0/21.0 (0.0)"]
    assert figures["latency_every_round_after"] == ["10.0/30.0/35.0 (1.0)", "10.0/40.0/45.0 (0.0)"]
    notes = _summary("burst", kept, runs, ["after"]).result["notes"]
    assert any("judged on" in note for note in notes)


def test_without_stamps_there_is_no_arrival_figure_nor_note() -> None:
    runs = {"burst-after": [_latency(30.0, None, 0.0)], "burst-cpu-after": [_cpu(3.0)]}
    kept = {name: outcomes[0] for name, outcomes in runs.items()}
    summary = _summary("burst", kept, runs, ["after"]).result
    assert "arrival_ms_after" not in summary["figures"]
    assert "arrival_every_round_after" not in summary["figures"]
    assert summary["notes"] == []


def test_a_group_gathers_each_workers_arrivals_in_milliseconds() -> None:
    group = Group()
    for arrivals in ([1_000_000, 2_000_000], []):
        group.add(
            {
                "browsers": 1,
                "received": len(arrivals),
                "lost": 0,
                "duplicated": 0,
                "malformed": 0,
                "closed": 0,
                "last": 0.0,
                "latencies_ns": np.array(arrivals, dtype=np.int64).tobytes(),
                "arrivals_ns": np.array(arrivals, dtype=np.int64).tobytes(),
            }
        )
    assert list(group.arrivals) == [1.0, 2.0]
    assert Group().arrivals.size == 0


def test_the_kept_round_is_the_least_disturbed_and_the_median_of_the_quiet_ones() -> None:
    # CPU rounds on a quiet machine: every round equally undisturbed, so the median.
    cpu = [_cpu(us) for us in (4.71, 5.19, 5.41, 5.28, 5.13)]
    assert least_disturbed(cpu).result["figures"]["server_cpu_us_per_delivery"] == 5.19
    # A latency round disturbed by other work is not kept, however good it looks.
    latency = [_latency(40, 20, 5.0), _latency(60, 35, 0.0), _latency(50, 30, 0.05)]
    kept = least_disturbed(latency).result["figures"]
    assert kept["arrival_latency_ms"]["p99"] == 30  # of two quiet rounds, the lower is the median
