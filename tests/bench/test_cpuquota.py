"""The cgroup weight that stands for a niceness (the rest of bench.cpuquota needs root)."""

from __future__ import annotations

from bench.cpuquota import weight_for


def test_niceness_zero_is_the_default_weight() -> None:
    assert weight_for(0, 1) == 1024
    assert weight_for(0, 2) == 100


def test_each_step_of_niceness_is_a_quarter_more_weight() -> None:
    # The kernel's table gives nice -5 a weight of 3,121 against 1,024.
    assert weight_for(-5, 1) == 3125
    assert weight_for(-5, 2) == 305
    assert weight_for(5, 1) == 336


def test_weights_stay_within_what_the_kernel_accepts() -> None:
    assert weight_for(-40, 1) == 262_144
    assert weight_for(40, 1) == 2
    assert weight_for(-40, 2) == 10_000
    assert weight_for(40, 2) == 1
