"""The two relay processes of the ``handoff`` scenario: the new code, the old one's exit.

The successor is a copy of the ``relay`` package under test with a version
string of its own, as an upgrade brings. While the handoff runs, both
processes' descriptors are counted (each browser is one) until the old process
exits; its CPU time is read from it after it exits and before it is reaped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import py_compile
import re
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import handoff_figures as hf
from bench import procfs
from bench.server import RelayNode, compile_relay, relay_root

#: How often the coordinator counts each relay process's descriptors during the handoff.
SAMPLE_INTERVAL = 0.1
#: The successor's version string: the copy of the code says it is new.
SUCCESSOR_SUFFIX = "+handoff-bench"


def successor_checkout(directory: Path, suffix: str = SUCCESSOR_SUFFIX) -> tuple[Path, str]:
    """Copy the ``relay`` package under test into ``directory`` with a version of its own.

    The version is the package's with ``suffix`` added. Returns the directory
    (for ``RelayNode(relay_src=...)``) and the new version.
    """
    copy = directory / "relay"
    shutil.copytree(
        Path(relay_root()) / "relay", copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    version = set_version(directory, suffix)
    # Compiled now, as an install compiles it: else the successor's start would
    # include compiling every module, which no real upgrade pays.
    compile_relay(str(directory))
    return directory, version


def set_version(directory: Path, suffix: str) -> str:
    """Give the copy in ``directory`` the version it came with plus ``suffix``; returns it.

    Run on a copy in use, it is an upgrade in place (as a package manager's):
    processes started from now on import the new version, running ones keep theirs.

    Raises:
        RuntimeError: the package has no ``__version__`` line.
    """
    init = directory / "relay" / "__init__.py"
    version = ""

    def patch(match: re.Match[str]) -> str:
        nonlocal version
        # Any suffix an earlier call added is replaced, not added to.
        version = match.group(1).partition("+")[0] + suffix
        return f'__version__ = "{version}"'

    text, count = re.subn(r'^__version__ = "(.*)"$', patch, init.read_text(), flags=re.M)
    if count != 1:
        raise RuntimeError(f"no __version__ line in {init}")
    init.write_text(text)
    # Forced: within the same second as the copy, the bytecode's source mtime would match.
    py_compile.compile(str(init), cfile=importlib.util.cache_from_source(str(init)))
    return version


def watch(old: RelayNode, new: RelayNode, deadline: float) -> tuple[list[hf.Sample], float, float]:
    """Count both processes' descriptors until the old one exits (and a second more).

    Returns the samples, when the old process exited, and its CPU seconds then
    (read from its zombie before it is reaped).

    Raises:
        RuntimeError: the old process did not exit by ``deadline``.
    """
    samples: list[hf.Sample] = []
    exited: float | None = None
    cpu = 0.0
    while exited is None or time.monotonic() < exited + 1.0:
        now = time.monotonic()
        samples.append(hf.Sample(now, _fds(old) if exited is None else None, _fds(new)))
        if exited is None and os.waitid(os.P_PID, old.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
            exited = time.monotonic()
            cpu = procfs.cpu_seconds(old.pid)
            assert old.proc is not None
            old.proc.wait()
        if exited is None and now > deadline:
            raise RuntimeError("the old process did not exit: " + "".join(old.log[-20:]))
        time.sleep(SAMPLE_INTERVAL)  # a bounded poll: the loop ends by the deadline
    assert exited is not None
    return samples, exited, cpu


def _fds(node: RelayNode) -> int | None:
    if node.proc is None:
        return None
    with contextlib.suppress(OSError):
        return procfs.open_fds(node.pid)
    return None


def moved(old_log: list[str], new_log: list[str]) -> dict[str, int | None]:
    """The counts both processes logged: moved by the old one, taken over by the new one."""

    def find(lines: list[str], pattern: str) -> int | None:
        for line in lines:
            match = re.search(pattern, line)
            if match:
                return int(match.group(1))
        return None

    return {
        "old_moved": find(old_log, r"handoff done: (\d+) browser connections moved"),
        "new_took_over": find(new_log, r"took over (\d+) browser connections"),
    }


def status(admin_port: int) -> dict[str, Any] | str:
    """The new process's /status/: version, adopted, browsers connected."""
    try:
        url = f"http://127.0.0.1:{admin_port}/status/"
        with urllib.request.urlopen(url, timeout=10) as reply:
            status = json.loads(reply.read())
    except (OSError, ValueError) as exc:
        return f"unread: {exc}"
    process = status.get("process", {})
    return {
        "version": process.get("version"),
        "adopted": process.get("adopted"),
        "clients_active": status.get("clients.active"),
    }
