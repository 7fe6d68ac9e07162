"""The benchmark's command line: run scenarios, print the table, write JSON, Markdown and PNG.

python -m bench                       # every scenario, results into bench/results/
python -m bench --scenario fanout     # one (repeat the option for several)
python -m bench --quick               # small smoke run, results into a temporary directory
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import (
    burst,
    cluster,
    handoff,
    hundredk,
    idlenode,
    procfs,
    report,
    roll,
    scale,
    scenarios,
)
from bench.harness import Bench
from bench.scenarios import Outcome
from bench.server import relay_root

RESULTS = Path(__file__).resolve().parent / "results"
#: Before each scenario, wait up to this long (seconds) for the last one's ports to free.
TIME_WAIT_LIMIT = 75.0

Runner = Callable[[bool, Callable[[], Bench]], list[Outcome]]


def _with_bench(run: Callable[[Bench, bool], Outcome | list[Outcome]]) -> Runner:
    def runner(quick: bool, factory: Callable[[], Bench]) -> list[Outcome]:
        with factory() as bench:
            outcome = run(bench, quick)
        return outcome if isinstance(outcome, list) else [outcome]

    return runner


def _twenty_thousand(quick: bool, factory: Callable[[], Bench]) -> list[Outcome]:
    """The ``20k`` scenario on relay, then (with ``--aphlict``) on one Aphlict process."""
    outcomes = []
    for prefix, aphlict in [("", None), ("aphlict-", scenarios.APHLICT_DIR)]:
        if prefix and aphlict is None:
            continue
        with factory() as bench:
            outcomes += scenarios.fanout(
                bench,
                name=f"{prefix}fanout-20k",
                idle_name=f"{prefix}idle-20k",
                browsers=2000 if quick else 20_000,
                rate=1,
                duration=3 if quick else 10,
                workers=4,
                aphlict=aphlict,
                # What each server wrote when, apart from the Python generators' lag.
                kernel_stamps=True,
            )
    return outcomes


#: Every scenario in run order: name -> (what it measures, how to run it, full or quick).
SCENARIOS: dict[str, tuple[str, Runner]] = {
    "idle-5k": (
        "RSS per idle connection, 5,000 browsers",
        _with_bench(lambda b, q: scenarios.idle(b, name="idle-5k", browsers=500 if q else 5000)),
    ),
    "idle-node": (
        "one --workers 6 broker-mode node, no browser: each process's RSS and PSS, start time",
        _with_bench(lambda b, q: idlenode.run(b, name="idle-node", workers=2 if q else 6)),
    ),
    "fanout": (
        "1,000 browsers, 100 posts/s: server CPU per delivery",
        _with_bench(
            lambda b, q: scenarios.fanout(
                b, name="fanout", browsers=200 if q else 1000, rate=100, duration=2 if q else 10
            )
        ),
    ),
    "fanout-latency": (
        "1,000 browsers, 20 posts/s: delivery latency",
        _with_bench(
            lambda b, q: scenarios.fanout(
                b,
                name="fanout-latency",
                browsers=200 if q else 1000,
                rate=20,
                duration=2 if q else 10,
            )
        ),
    ),
    "broker-latency": (
        "1,000 browsers on one broker-mode node (its own Redis), 20 posts/s: local latency",
        _with_bench(
            lambda b, q: scenarios.fanout(
                b,
                name="broker-latency",
                browsers=200 if q else 1000,
                rate=20,
                duration=2 if q else 10,
                broker=True,
            )
        ),
    ),
    "20k": (
        "20,000 browsers (or as many as fit): idle RSS (idle-20k), then 1 post/s (fanout-20k); "
        "with --aphlict, the same on one Aphlict process (aphlict-idle-20k, aphlict-fanout-20k)",
        lambda q, factory: _twenty_thousand(q, factory),
    ),
    "throughput": (
        "10 browsers, posting as fast as possible to a lone node",
        _with_bench(
            lambda b, q: scenarios.throughput(
                b, name="throughput", browsers=10, duration=2 if q else 8, max_posts=200_000
            )
        ),
    ),
    "throughput-2-peers": (
        "10 browsers, posting as fast as possible to a node that relays to 2 peers",
        _with_bench(
            lambda b, q: scenarios.throughput(
                b,
                name="throughput-2-peers",
                browsers=10,
                duration=2 if q else 8,
                max_posts=200_000,
                peers=2,
            )
        ),
    ),
    "cluster-hop": (
        "3-node mesh: latency added by one peer hop",
        _with_bench(
            lambda b, q: cluster.cluster_hop(
                b,
                name="cluster-hop",
                browsers_per_node=20 if q else 200,
                rate=20,
                duration=2 if q else 10,
            )
        ),
    ),
    "mesh-3-2000": (
        "3-node full mesh, 2,000 posts/s to node 1: deliveries/s, loss, cross-node latency",
        _with_bench(
            lambda b, q: cluster.cluster_rate(
                b,
                name="mesh-3-2000",
                mode="mesh",
                size=3,
                browsers_per_node=20,
                rate=500 if q else 2000,
                duration=2 if q else 5,
            )
        ),
    ),
    "broker-5-2000": (
        "5 nodes on one Redis, 2,000 posts/s to node 1: deliveries/s, loss, cross-node latency",
        _with_bench(
            lambda b, q: cluster.cluster_rate(
                b,
                name="broker-5-2000",
                mode="broker",
                size=5,
                browsers_per_node=20,
                rate=500 if q else 2000,
                duration=2 if q else 5,
            )
        ),
    ),
    "mesh": (
        "3-node mesh, browsers on node 2, 500-4,000 posts/s to node 1: loss and cross-node p99",
        lambda q, factory: [
            outcome
            for directory, name in [(None, "mesh"), (scenarios.APHLICT_DIR, "aphlict-mesh")]
            if name == "mesh" or directory is not None
            for outcome in cluster.mesh_rate(
                factory,
                name=name,
                rates=[500, 2000] if q else [500, 1000, 2000, 4000],
                browsers=10 if q else 50,
                duration=2 if q else 5,
                aphlict=directory,
            )
        ],
    ),
    "broker-5-max": (
        "5 nodes on one Redis, posting to node 1 as fast as it answers",
        _with_bench(
            lambda b, q: cluster.cluster_rate(
                b,
                name="broker-5-max",
                mode="broker",
                size=5,
                browsers_per_node=20,
                rate=None,
                duration=2 if q else 6,
            )
        ),
    ),
    "workers": (
        "fan-out at saturation, broker mode: --workers 1 vs --workers 2",
        lambda q, factory: scale.workers_fanout(
            factory,
            name="workers",
            browsers=200 if q else 1000,
            duration=2 if q else 8,
            max_posts=2_000 if q else 20_000,
            rounds=1 if q else 2,
        ),
    ),
    "burst": (
        "1,000 browsers, 20 posts/s arriving 8 at a time: latency; and CPU per delivery at "
        "100 posts/s (with --before DIR, that checkout too, side by side)",
        lambda q, factory: burst.burst_compare(
            factory,
            name="burst",
            browsers=200 if q else 1000,
            rate=20,
            burst=8,
            duration=2 if q else 10,
            cpu_rate=100,
            cpu_duration=2 if q else 10,
            rounds=1 if q else 5,
            before=burst.BEFORE_DIR,
        ),
    ),
    "100k": (
        "100,000 browsers on one --workers 6 node (broker mode): connect rate, memory, "
        "1 post/s to all, 10 posts/s to own keys (--browsers N for fewer)",
        lambda q, factory: (
            hundredk.run(
                factory,
                name="100k",
                setup=hundredk.Setup(browsers=hundredk.BROWSERS, **hundredk.SHAPE),
            )
            if not q
            else hundredk.run(factory, name="100k", setup=hundredk.QUICK)
        ),
    ),
    "handoff": (
        "18,000 idle browsers on one process handed to a copy of the code (--take-over) "
        "while posts go on: handoff time, browsers lost, latency during it (--browsers N)",
        lambda q, factory: handoff.run(
            factory, name="handoff", setup=handoff.QUICK if q else handoff.Setup(handoff.BROWSERS)
        ),
    ),
    "100k-roll": (
        "the 100k node's workers replaced in turn (SIGUSR2) while posts go on: roll time, "
        "browsers closed, deliveries lost, latency during it (--browsers N)",
        lambda q, factory: roll.run(
            factory, name="100k-roll", setup=roll.QUICK if q else roll.Setup(roll.BROWSERS)
        ),
    ),
    "sweep": (
        "throughput against subscriber count",
        lambda q, factory: [
            scenarios.sweep(
                factory,
                name="sweep",
                subscribers=[1, 100] if q else [1, 10, 100, 1000, 5000],
                deliveries=20_000 if q else 300_000,
                duration=1 if q else 4,
            )
        ],
    ),
}


def _relay_source() -> dict[str, Any]:
    """Where the relay under test is imported from, and its git commit."""
    import relay

    root = Path(relay_root())

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "path": str(root),
        "commit": git("rev-parse", "--short=12", "HEAD") or "unknown",
        "dirty": bool(git("status", "--porcelain", "--", "relay")),
        "version": relay.__version__,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark relay: fan-out, memory, throughput and cluster scenarios.",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        metavar="NAME",
        help="run only this scenario (repeatable): " + ", ".join(SCENARIOS),
    )
    parser.add_argument("--quick", action="store_true", help="a small, fast smoke run")
    parser.add_argument(
        "--out",
        type=Path,
        help="where to write results (default: bench/results/, or a temporary directory "
        "with --quick)",
    )
    parser.add_argument(
        "--relay-src",
        type=Path,
        metavar="DIR",
        help="benchmark the relay package in DIR (a checkout) instead of the installed one",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        metavar="N",
        help="run the nodes and load generators at this niceness (negative needs root): on "
        "a machine shared with other work, -5 keeps that work from distorting the latencies",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run the nodes under cProfile (CPU time) and write their stats into DIR; "
        "slows relay down, so the figures of such a run are not comparable",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each scenario, wait up to SECONDS for the machine to be under 15%% busy "
        "(for shared machines; the busy fraction found is recorded with the scenario)",
    )
    parser.add_argument(
        "--aphlict",
        type=Path,
        metavar="DIR",
        help="an extraction of Aphlict's support/aphlict/server (with node_modules/ws): the "
        "mesh scenario then runs three Aphlict nodes too and the 20k scenario one Aphlict "
        "process, for figures beside relay's",
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help="a checkout to compare with (say, a worktree of main): the burst scenario runs "
        "its relay package too, in turns with this one, and sets both side by side",
    )
    parser.add_argument(
        "--browsers",
        type=int,
        metavar="N",
        help=f"browsers of the 100k and 100k-roll scenarios (default {hundredk.BROWSERS}) and "
        f"of the handoff one (default {handoff.BROWSERS}); fewer to try it out",
    )
    shape = parser.add_argument_group(
        "the 100k scenario's shape", "to measure what one more worker, or more CPU, changes"
    )
    shape.add_argument("--workers", type=int, metavar="N", help="relay workers (default 6)")
    shape.add_argument(
        "--worker-cores",
        type=float,
        metavar="C",
        help="each worker's CPU quota, in cores (default 0.22)",
    )
    shape.add_argument(
        "--loadgen-cores",
        type=float,
        metavar="C",
        help="the load generators' CPU quota together, in cores (default 0.6)",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios; returns 0, or 1 if a scenario failed to run."""
    args = _parser().parse_args(argv)
    if args.relay_src:
        sys.path.insert(0, str(args.relay_src.resolve()))
    if args.nice:
        # Nodes and workers inherit it, so relay and its load keep their balance.
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    if args.aphlict:
        if not (args.aphlict / "aphlict_server.js").is_file():
            parser_error = f"--aphlict {args.aphlict}: no aphlict_server.js there"
            print(parser_error, file=sys.stderr)
            return 2
        scenarios.APHLICT_DIR = args.aphlict.resolve()
    if args.before:
        if not (args.before / "relay" / "__init__.py").is_file():
            print(f"--before {args.before}: no relay package there", file=sys.stderr)
            return 2
        burst.BEFORE_DIR = args.before.resolve()
    burst.WAIT_QUIET = args.wait_quiet
    if args.browsers:
        hundredk.BROWSERS = handoff.BROWSERS = roll.BROWSERS = args.browsers
    for field in ("workers", "worker_cores", "loadgen_cores"):
        if getattr(args, field) is not None:
            hundredk.SHAPE[field] = getattr(args, field)
    if args.list:
        for name, (what, _) in SCENARIOS.items():
            print(f"{name:20} {what}")
        return 0
    out: Path = args.out or (
        Path(tempfile.mkdtemp(prefix="relay-bench-")) if args.quick else RESULTS
    )
    out.mkdir(parents=True, exist_ok=True)
    chosen = args.scenario or list(SCENARIOS)
    began = time.monotonic()
    tag = secrets.token_hex(4)
    results: dict[str, dict[str, Any]] = {}
    latencies: dict[str, np.ndarray] = {}
    sweep = None
    timeline = None
    failed = False
    for name in chosen:
        what, runner = SCENARIOS[name]
        print(f"[{time.monotonic() - began:6.1f} s] {name}: {what}", file=sys.stderr, flush=True)
        # The last scenario's browsers hold their ports in TIME_WAIT for a minute.
        time_wait = procfs.wait_for_time_wait(TIME_WAIT_LIMIT)
        busy_before = procfs.wait_until_quiet(args.wait_quiet) if args.wait_quiet else None
        try:
            outcomes = runner(args.quick, functools.partial(Bench, tag, args.profile, name))
        except Exception as exc:
            failed = True
            traceback.print_exc()
            results[name] = {"scenario": name, "error": f"{type(exc).__name__}: {exc}"}
            continue
        for outcome in outcomes:
            if busy_before is not None:
                outcome.result["machine_busy_before"] = round(busy_before, 3)
            if time_wait >= 1000:
                outcome.result.setdefault("notes", []).append(
                    f"started with {time_wait} sockets still in TIME_WAIT"
                )
            results[outcome.result["scenario"]] = outcome.result
            latencies.update(outcome.latencies)
            sweep = outcome.sweep or sweep
            timeline = outcome.timeline or timeline
            print(json.dumps(outcome.result["figures"]), file=sys.stderr, flush=True)
    seconds = time.monotonic() - began
    document = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "seconds": round(seconds, 1),
        "machine": procfs.machine_description(),
        "relay": _relay_source(),
        "targets": report.check_targets(results),
        "scenarios": results,
    }
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    table = report.markdown(document)
    (out / "results.md").write_text(table)
    title = f"relay {document['relay']['commit']}, {document['date'][:10]}"
    report.plot(out / "results.png", latencies, sweep, title, timeline)
    print(table)
    print(f"results written to {out}/results.{{json,md,png}} in {seconds:.0f} s", file=sys.stderr)
    return 1 if failed else 0
