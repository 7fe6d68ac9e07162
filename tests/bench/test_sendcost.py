"""The loopback send probe: it measures, and leaves no process or pinning behind."""

from __future__ import annotations

import os

import pytest

from bench import sendcost


@pytest.mark.parametrize("polling", [False, True])
def test_measures_and_cleans_up(polling: bool) -> None:
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("the probe needs two CPUs")  # this machine and CI have two
    median, least = sendcost.measure(count=20, size=100, passes=3, polling=polling)
    assert 0 < least <= median
    assert os.sched_getaffinity(0) == cpus
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # the reader was reaped
