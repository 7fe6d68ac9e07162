"""Memory per browser, kernel socket memory, throttling and limits from what /proc said."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from bench.footprint import (
    connect_figures,
    limits,
    memory_figures,
    node_memory,
    parse_sockstat,
    quota_use,
    throttled_share,
)
from bench.procfs import memory, resident_set_bytes

SOCKSTAT = """sockets: used 200154
TCP: inuse 200011 orphan 0 tw 12 alloc 200020 mem 51234
UDP: inuse 0 mem 0
"""


def test_sockstat_tcp_line_with_memory_in_bytes() -> None:
    assert parse_sockstat(SOCKSTAT, page_size=4096) == {
        "inuse": 200011,
        "alloc": 200020,
        "tw": 12,
        "mem_bytes": 51234 * 4096,
    }
    with pytest.raises(ValueError, match="no TCP line"):
        parse_sockstat("sockets: used 1\n")


def test_memory_per_browser_counts_every_process() -> None:
    mib = 1024 * 1024
    before = {"inuse": 10, "alloc": 10, "tw": 0, "mem_bytes": 4096}
    after = {"inuse": 200_010, "alloc": 200_010, "tw": 0, "mem_bytes": 4096 + 100 * mib}
    figures = memory_figures(
        [20 * mib] + [80 * mib] * 6, [20 * mib] + [180 * mib] * 6, before, after, 100_000
    )
    assert figures["node_processes"] == 7
    assert figures["rss_before_mib"] == 500.0
    assert figures["rss_after_mib"] == 1100.0
    # 600 MiB over 100,000 browsers, and 1,100 MiB over them.
    assert figures["rss_growth_kib_per_browser"] == round(600 * 1024 / 100_000, 2)
    assert figures["rss_total_kib_per_browser"] == round(1100 * 1024 / 100_000, 2)
    assert figures["kernel_tcp_kib_per_browser"] == 1.02
    assert figures["tcp_sockets_in_use_growth"] == 200_000
    assert "pss_after_mib" not in figures  # PSS only when it was read


def test_pss_beside_rss_counts_shared_pages_once() -> None:
    mib = 1024 * 1024
    sockstat = {"inuse": 0, "alloc": 0, "tw": 0, "mem_bytes": 0}
    # 7 processes sharing 25 MiB of library pages: RSS counts them 7 times, PSS once.
    rss_before = [40 * mib] + [75 * mib] * 6
    pss_before = [20 * mib] + [52 * mib] * 6
    figures = memory_figures(
        rss_before,
        [40 * mib] + [105 * mib] * 6,
        sockstat,
        sockstat,
        100_000,
        pss_before=pss_before,
        pss_after=[20 * mib] + [82 * mib] * 6,
        anon_before=[18 * mib] + [50 * mib] * 6,
        anon_after=[18 * mib] + [80 * mib] * 6,
    )
    assert figures["rss_before_mib"] == 490.0
    assert figures["pss_before_mib"] == 332.0
    assert figures["pss_after_mib"] == 512.0
    assert figures["pss_per_process_after_mib"] == [20.0] + [82.0] * 6
    # The growth is the workers' own memory: the same in both.
    assert figures["pss_growth_kib_per_browser"] == figures["rss_growth_kib_per_browser"] == 1.84
    assert figures["pss_total_kib_per_browser"] == round(512 * 1024 / 100_000, 2)
    assert figures["rss_total_kib_per_browser"] == round(670 * 1024 / 100_000, 2)
    assert figures["anon_before_mib"] == 318.0
    assert figures["anon_growth_kib_per_browser"] == 1.84
    assert "resident_set_after_mib" not in figures  # only when it was read


def test_resident_set_per_browser_beside_the_sums() -> None:
    mib = 1024 * 1024
    sockstat = {"inuse": 0, "alloc": 0, "tw": 0, "mem_bytes": 0}
    figures = memory_figures(
        [40 * mib] * 2,
        [90 * mib] * 2,
        sockstat,
        sockstat,
        51_200,
        resident_before=60 * mib,
        resident_after=160 * mib,
    )
    assert figures["resident_set_before_mib"] == 60.0
    assert figures["resident_set_after_mib"] == 160.0
    assert figures["resident_set_growth_kib_per_browser"] == 2.0
    assert figures["resident_set_total_kib_per_browser"] == 3.2


def test_node_memory_sums_rss_and_pss_and_names_the_supervisor() -> None:
    mib = 1024 * 1024
    supervisor = {"rss": 20 * mib, "pss": 10 * mib, "anon": 8 * mib, "file": 12 * mib}
    worker = {"rss": 80 * mib, "pss": 60 * mib, "anon": 55 * mib, "file": 25 * mib}
    figures = node_memory([supervisor, worker, worker])
    assert figures["node_processes"] == 3
    assert figures["rss_mib"] == 180.0
    # Shared pages counted once: the PSS sum is below the RSS sum.
    assert figures["pss_mib"] == 130.0
    assert figures["anon_mib"] == 118.0
    assert figures["file_mib"] == 62.0
    assert figures["first_rss_mib"] == 20.0
    assert figures["first_pss_mib"] == 10.0
    assert figures["per_process_pss_mib"] == [10.0, 60.0, 60.0]


def test_throttled_share_per_group_over_the_window() -> None:
    before = {"worker1": {"periods": 100, "throttled_periods": 10, "throttled_s": 1.0}}
    after = {
        "worker1": {"periods": 300, "throttled_periods": 60, "throttled_s": 3.0},
        "loadgen": {"periods": 0, "throttled_periods": 0, "throttled_s": 0.0},
    }
    assert throttled_share(before, after) == {"worker1": 0.25, "loadgen": 0.0}


def test_limits_shares() -> None:
    found = limits(
        connections_per_worker=[16_500, 16_800],
        fd_limit=20_000,
        per_address=8_334,
        port_range=(32768, 60999),
        memory_used_bytes=3,
        memory_total_bytes=12,
    )
    assert found["busiest_worker_connections"] == 16_800
    assert found["busiest_worker_fd_share"] == 0.84
    assert found["ports_per_source_address"] == 28_232
    assert found["port_share"] == 0.295
    assert found["memory_used_share"] == 0.25


def test_quota_use_says_which_side_hit_its_quota() -> None:
    figures = {
        "worker_cores_used": [0.2, 0.21],
        "loadgen_cores_used": 0.59,
        "cpu_throttled_share": {"loadgen": 0.9, "worker1": 0.1, "worker2": 0.25},
    }
    assert quota_use(figures, 0.22, 0.6) == (
        "the relay workers used 0.41 of the 0.44 cores of their quotas (each hit its quota "
        "in at most 25% of the scheduler periods); the generators used 0.59 of their 0.6 "
        "(hit in 90%)"
    )


def test_connect_figures_add_up_the_generators() -> None:
    reports = [
        {
            "ready": 16_660,
            "failed": {"ConnectionRefusedError": 5, "TimeoutError": 2},
            "seconds": 80,
        },
        {"ready": 16_667, "failed": {}, "seconds": 79.96},
    ]
    figures = connect_figures(reports, 100.0)
    assert figures["connected"] == 33_327
    assert figures["refused"] == 5
    assert figures["failed"] == 7
    assert figures["failed_by_error"] == {"ConnectionRefusedError": 5, "TimeoutError": 2}
    assert figures["connects_per_s"] == 333.3
    assert figures["generator_seconds"] == [80, 80.0]
    assert connect_figures([{"ready": 1, "failed": {}, "seconds": 1}], 1)["failed_by_error"] == (
        "none"
    )


def test_procfs_memory_of_an_idle_process() -> None:
    # An idle process: this test's own process may allocate between the two
    # files' reads (it did, under the whole suite), which these sums cannot bear.
    script = "import sys; print('ready', flush=True); sys.stdin.read()"
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as idle:
        assert idle.stdout is not None
        assert idle.stdout.readline() == b"ready\n"
        found = memory(idle.pid)
        idle.kill()
    assert 0 < found["pss"] <= found["rss"]
    assert found["anon"] + found["file"] <= found["rss"]


def test_resident_set_counts_pages_forked_processes_share_once() -> None:
    # A parent with 64 MiB of its own, and a forked child that still shares
    # them: the RSS sum counts them twice, the resident set once.
    script = (
        "import os, sys; block = bytearray(64 << 20); pid = os.fork(); "
        "print(pid or os.getpid(), flush=True) if pid else None; sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        pids = [parent.pid, child]
        rss = [memory(pid)["rss"] for pid in pids]
        together = resident_set_bytes(pids)
        alone = resident_set_bytes([parent.pid])
        parent.kill()
        os.kill(child, signal.SIGKILL)
    # Page frame numbers are root's to read (the suite runs as root, as CI does).
    assert together is not None, "/proc/PID/pagemap needs root"
    assert alone is not None
    assert min(rss) > 64 << 20
    assert alone <= together < sum(rss) - (60 << 20)
    assert together - alone < 8 << 20  # the child's own pages: a stack, a few COW pages
