"""The ``idle-node`` scenario: a ``--workers N`` broker-mode node's memory before any browser.

A node's base memory is paid again by every process it runs, so at 100,000
browsers on ``--workers 6`` it was most of the node's memory per browser
(bench/results/100k). This starts such a node on a Redis of its own, waits
for it to settle, and reads each process's RSS and PSS (``procfs.memory``),
and how long the node took to report ready.
"""

from __future__ import annotations

import time

from bench import footprint, procfs
from bench.harness import Bench
from bench.scenarios import Outcome
from bench.server import compile_relay, node_config, relay_root

#: After ready, time for the workers' start-up to finish (the garbage collector's
#: freeze, the first broker round trips) before memory is read.
SETTLE_SECONDS = 3.0


def run(bench: Bench, *, name: str, workers: int) -> Outcome:
    """Start a ``--workers`` node on its own Redis; its processes' memory, idle, and start time."""
    redis = bench.redis()
    compile_relay(relay_root())  # before the clock starts: an installed relay has it already
    began = time.monotonic()
    node = bench.node(node_config(broker=redis.url), workers=workers)
    start_seconds = time.monotonic() - began
    time.sleep(SETTLE_SECONDS)  # not readiness (awaited above): letting start-up's work end
    pids = node.pids()
    figures = footprint.node_memory(
        [procfs.memory(pid) for pid in pids], procfs.resident_set_bytes(pids)
    )
    figures["start_seconds"] = round(start_seconds, 2)
    result = {
        "scenario": name,
        "description": (
            f"one --workers {workers} node in broker mode, no browser: each process's memory "
            "(RSS counts shared library pages once per process, PSS shares them out)"
        ),
        "parameters": {"workers": workers, "settle_seconds": SETTLE_SECONDS},
        "figures": figures,
        "notes": [
            "processes: the supervisor, then its children (workers, and the template "
            "process they are forked from)",
        ],
    }
    return Outcome(result=result, latencies={})
