"""``python -m bench.importcost MODULE...``: the memory each import adds to a fresh process.

Imports the modules in the order given and prints, for each, how much this
process's RssAnon grew (its own memory: code objects, module state, what C
libraries allocate on load), and the total. A module's figure leaves out
what the ones before it already loaded, so the order says what is charged
to whom. What a node's process keeps for life is mostly this (bench
``idle-node``).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def rss_anon_kib() -> int:
    """This process's RssAnon, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise ValueError("no RssAnon in /proc/self/status")


def main(modules: list[str]) -> None:
    """Import ``modules`` in order, printing each one's RssAnon growth and the total, in MiB."""
    start = previous = rss_anon_kib()
    print(f"{'(the interpreter)':40} {'':>8} total {start / 1024:6.1f} MiB")
    for name in modules:
        importlib.import_module(name)
        now = rss_anon_kib()
        print(f"{name:40} +{(now - previous) / 1024:6.1f} MiB total {now / 1024:6.1f} MiB")
        previous = now


if __name__ == "__main__":
    main(sys.argv[1:])
