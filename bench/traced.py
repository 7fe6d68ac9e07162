"""``python -m bench.traced SNAPSHOT relay-args...``: run relay under tracemalloc.

``python -m bench.memory --profile`` starts its node this way, to see what an
idle browser's memory is made of. Each SIGUSR1 writes a tracemalloc snapshot
to ``SNAPSHOT`` (replacing it whole, by a rename, so a reader never sees half
of one). A thread of its own waits for the signal: relay's event loop never
sees it, and the snapshot is taken whatever the loop is doing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import tracemalloc

from relay.cli.main import main

#: Frames kept per allocation: enough to tell relay's callers from websockets' internals.
FRAMES = 12


def _dump_on_signal(path: str) -> None:
    while True:
        signal.sigwait({signal.SIGUSR1})
        partial = f"{path}.partial"
        tracemalloc.take_snapshot().dump(partial)
        os.replace(partial, path)


def run(snapshot_path: str, args: list[str]) -> int:
    """Run ``relay args`` under tracemalloc, writing a snapshot to ``snapshot_path`` on SIGUSR1."""
    # Blocked in every thread (threads started later inherit the mask); only sigwait takes it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    tracemalloc.start(FRAMES)
    threading.Thread(
        target=_dump_on_signal, args=(snapshot_path,), name="snapshot", daemon=True
    ).start()
    return main(args)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2:]))
