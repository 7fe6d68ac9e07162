"""The open-files limit: a node started under a low soft limit takes browsers past it.

Each node here is a real process started under a lowered limit (``prlimit``),
as a shell with ``ulimit -n 1024`` would start it.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from relay.process.open_files import RESERVED
from tests.support import WAIT, Browser, RelayProcess, local_config

pytestmark = pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux prlimit")

#: A soft limit below what the test connects, under a hard limit well above it.
SOFT, HARD = 64, 1024
BROWSERS = 2 * SOFT


def under_limit(command: list[str]) -> list[str]:
    """``command`` run with the open-files limit at ``SOFT`` (soft) and ``HARD`` (hard)."""
    return ["prlimit", f"--nofile={SOFT}:{HARD}", "--", *command]


def open_files_limits(pid: int) -> tuple[int, int]:
    """The process's (soft, hard) open-files limit, as the kernel reports it."""
    text = Path(f"/proc/{pid}/limits").read_text()
    match = re.search(r"^Max open files\s+(\d+)\s+(\d+)", text, re.MULTILINE)
    assert match is not None, text
    return int(match.group(1)), int(match.group(2))


async def test_a_node_raises_its_soft_limit_to_the_hard_one_and_takes_browsers_past_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(local_config()))
    node = RelayProcess(path)
    node.args = under_limit(node.args)  # prlimit execs relay: same process
    await asyncio.to_thread(node.start)
    try:
        assert open_files_limits(node.pid) == (HARD, HARD)
        port = node.client_ports[0]
        browsers = await asyncio.gather(*(Browser.open(port) for _ in range(BROWSERS)))
        await asyncio.gather(*(browser.sync() for browser in browsers))  # each one served
        await asyncio.gather(*(browser.close() for browser in browsers))
    finally:
        node.signal(signal.SIGTERM)
        code, output = await asyncio.to_thread(node.wait)
    assert code == 0
    lines = [line for line in output.splitlines() if "open files" in line]
    # Once, at INFO; the default cap of 100,000 does not fit, and the line says what does.
    assert len(lines) == 1, lines
    assert " INFO " in lines[0]
    assert f"raised the soft limit from {SOFT} to {HARD} (the hard limit)" in lines[0]
    assert f"room for about {HARD - RESERVED} browsers" in lines[0]
    assert "limits.max_connections" in lines[0]


def test_a_connection_cap_that_cannot_fit_stops_the_start_naming_the_field(
    tmp_path: Path,
) -> None:
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(local_config(limits={"max_connections": HARD})))
    result = subprocess.run(
        under_limit([sys.executable, "-m", "relay", "serve", "--config", str(path)]),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 1
    assert f"{path}: limits.max_connections is {HARD}, but this process may open only " in (
        result.stderr
    )
    assert f"lower limits.max_connections to {HARD - RESERVED} or less" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listener ready" not in result.stderr


def test_a_connection_cap_that_fits_starts(tmp_path: Path) -> None:
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(local_config(limits={"max_connections": HARD - RESERVED})))
    node = RelayProcess(path)
    node.args = under_limit(node.args)
    node.start()
    node.signal(signal.SIGTERM)
    code, output = node.wait()
    assert code == 0
    (line,) = [line for line in output.splitlines() if "open files" in line]
    assert line.endswith(f"raised the soft limit from {SOFT} to {HARD} (the hard limit)")
