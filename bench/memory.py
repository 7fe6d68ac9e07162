"""``python -m bench.memory``: one relay process's memory per idle browser.

One relay node (one process) is started, then load-generator processes of
the benchmark (``bench.workers``) open N browsers to it, each subscribed to a
shared key and a key of its own, as Phorge tabs are, and each confirmed by a
pong. The node's resident memory (VmRSS) is read before and after; the growth
divided by N is what an idle browser costs.

With ``--profile`` the node runs under tracemalloc (``bench.traced``), which
inflates its memory and slows it down: the RSS figures of such a run are not
comparable. What it prints instead is what the growth is made of: the source
lines that allocated it, in bytes and objects per browser.

Results go to stdout and, as JSON, to ``--out`` (``bench/results/memory/``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import secrets
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench import procfs
from bench.harness import Bench
from bench.scenarios import BROWSER_KEYS, BROWSERS_PER_WORKER
from bench.server import RelayNode, node_config

RESULTS = Path(__file__).resolve().parent / "results" / "memory"
#: Longest the node may take to write a tracemalloc snapshot (tracing 18,000 browsers).
SNAPSHOT_TIMEOUT = 120.0
#: Allocation sites listed in a profile.
PROFILE_TOP = 25


def measure(browsers: int, relay_src: Path | None, profile: bool) -> dict[str, Any]:
    """Start a node, connect ``browsers`` idle browsers, and return the figures."""
    with (
        Bench(secrets.token_hex(4), scenario="memory") as bench,
        tempfile.TemporaryDirectory(prefix="relay-bench-memory-") as scratch,
    ):
        snapshot_path = Path(scratch) / "snapshot" if profile else None
        node = RelayNode(node_config(), "relay", relay_src=relay_src, traced=snapshot_path)
        bench.nodes.append(node)
        node.start()
        browsers = min(browsers, bench.browser_capacity(node))
        before_snapshot = _snapshot(node, snapshot_path)
        rss_before = node.rss_bytes()
        bench.browsers(
            [
                {
                    "name": "browsers",
                    "port": node.client_port,
                    "count": browsers,
                    "keys": BROWSER_KEYS,
                }
            ],
            workers=max(2, -(-browsers // BROWSERS_PER_WORKER)),
            seen_size=1,
        )
        rss_after = node.rss_bytes()
        figures: dict[str, Any] = {
            "browsers": browsers,
            "rss_before_bytes": rss_before,
            "rss_after_bytes": rss_after,
            "rss_per_browser_kib": round((rss_after - rss_before) / browsers / 1024, 3),
            "connect_seconds": round(bench.connect_seconds, 2),
        }
        if before_snapshot is not None:
            after_snapshot = _snapshot(node, snapshot_path)
            assert after_snapshot is not None
            figures["profile"] = _profile(before_snapshot, after_snapshot, browsers)
    return {
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "relay_src": str(relay_src) if relay_src else None,
        "profiled": profile,
        "figures": figures,
    }


def _snapshot(node: RelayNode, path: Path | None) -> tracemalloc.Snapshot | None:
    """Ask a traced node for a snapshot and load it (a bounded poll for the file)."""
    if path is None:
        return None
    path.unlink(missing_ok=True)
    assert node.proc is not None
    node.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + SNAPSHOT_TIMEOUT
    while not path.exists():
        if time.monotonic() > deadline or node.proc.poll() is not None:
            raise RuntimeError("the node wrote no tracemalloc snapshot")
        time.sleep(0.05)
    return tracemalloc.Snapshot.load(str(path))


def _profile(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, browsers: int
) -> list[dict[str, Any]]:
    """The allocation sites that grew most, in bytes and objects per browser."""
    # Only what Python allocates is traced: the kernel's socket buffers are not in RSS anyway.
    rows = []
    for stat in after.compare_to(before, "lineno")[:PROFILE_TOP]:
        frame = stat.traceback[0]
        rows.append(
            {
                "where": f"{_short(frame.filename)}:{frame.lineno}",
                "bytes_per_browser": round(stat.size_diff / browsers, 1),
                "objects_per_browser": round(stat.count_diff / browsers, 2),
            }
        )
    return rows


def _short(filename: str) -> str:
    """A source file's name from its package on (``websockets/frames.py``)."""
    for package in ("/relay/", "/websockets/", "/asyncio/", "/uvloop/"):
        at = filename.rfind(package)
        if at >= 0:
            return filename[at + 1 :]
    return filename


def _print(result: dict[str, Any]) -> None:
    figures = result["figures"]
    print(
        f"{figures['browsers']} idle browsers: RSS {figures['rss_before_bytes'] / 2**20:.1f} MiB "
        f"-> {figures['rss_after_bytes'] / 2**20:.1f} MiB, "
        f"{figures['rss_per_browser_kib']:.2f} KiB per browser"
        + (" (under tracemalloc: not comparable)" if result["profiled"] else "")
    )
    for row in figures.get("profile", ()):
        print(
            f"  {row['bytes_per_browser']:8.1f} B  {row['objects_per_browser']:6.2f} objects"
            f"  {row['where']}"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the measurement the command line asks for; print it and write it as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--browsers", type=int, default=18_000, help="idle browsers to open")
    parser.add_argument("--relay-src", type=Path, help="measure the relay of this checkout")
    parser.add_argument("--profile", action="store_true", help="tracemalloc profile instead")
    parser.add_argument("--label", default="run", help="the JSON file's name in --out")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument(
        "--wait-quiet", type=float, default=0.0, help="wait up to this long for a quiet machine"
    )
    args = parser.parse_args(argv)
    if args.wait_quiet:
        procfs.wait_until_quiet(args.wait_quiet)
    result = measure(args.browsers, args.relay_src, args.profile)
    _print(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.label}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
