"""A short seeded fuzz run against a real relay process; ``make fuzz`` runs a long one."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.fuzz.run import FuzzRun

pytestmark = pytest.mark.slow

#: The short run's seed and length (RELAY_FUZZ_SEED and RELAY_FUZZ_SECONDS change them).
SEED = 19
SECONDS = 25.0
#: Where failing inputs are kept for ``python -m tests.fuzz --replay`` (git ignores it).
FAILURES = Path(__file__).resolve().parents[2] / "fuzz-failures"


def test_a_short_seeded_fuzz_run_finds_nothing_against_the_node(tmp_path: Path) -> None:
    seed = int(os.environ.get("RELAY_FUZZ_SEED", SEED))
    seconds = float(os.environ.get("RELAY_FUZZ_SECONDS", SECONDS))
    # Its own event loop, out of asyncio's debug mode: the fuzzer is a client like any other.
    # The run also fails when /metrics or the node's memory pass the README's bounds.
    report = asyncio.run(FuzzRun(seed, seconds, tmp_path, FAILURES, replays=1).run())
    summary = "\n".join(report.lines())
    print(summary)
    assert report.passed, summary
    assert report.admin_requests > 100, summary
    assert report.client_sessions > 50, summary
