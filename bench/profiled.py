"""``python -m bench.profiled STATS relay-args...``: run relay under cProfile, counting CPU time.

The benchmark's ``--profile DIR`` starts nodes this way. cProfile's clock is
the process's CPU time, so time a node spends waiting for the CPU (on a busy
machine) is not counted, unlike with a sampling profiler's wall-clock view.
Stats are written when relay exits (the benchmark stops nodes with SIGTERM,
which relay handles by returning from ``main``).
"""

from __future__ import annotations

import cProfile
import sys
import time

from relay.cli.main import main


def run(stats_path: str, args: list[str]) -> int:
    """Run ``relay args`` under cProfile and write the stats to ``stats_path``."""
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        return main(args)
    finally:
        profiler.disable()
        profiler.dump_stats(stats_path)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2:]))
