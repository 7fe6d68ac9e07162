"""The README's quick start, as a newcomer meets it: the example config runs green."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.chromium import Chromium
from tests.support import Admin, RelayProcess, eventually, notification

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).parents[2] / "aphlict.example.json"

#: The one warning this environment earns: the tests may run as root.
AS_ROOT = "relay is running as root"


def example_in(directory: Path) -> Path:
    """The example as ``make run`` starts it, but on OS-picked ports, its files in ``directory``."""
    config = orjson.loads(EXAMPLE.read_bytes())
    for server in config["servers"]:
        assert server["listen"] == "127.0.0.1", "the example must expose nothing beyond the machine"
        server["port"] = 0
    config["logs"] = [{"path": str(directory / "log" / "aphlict.log")}]
    config["pidfile"] = str(directory / "pid" / "aphlict.pid")
    path = directory / "aphlict.json"
    path.write_bytes(orjson.dumps(config))
    return path


async def test_the_example_config_starts_with_a_dashboard_free_of_errors(
    tmp_path: Path, chromium: Chromium, session: aiohttp.ClientSession
) -> None:
    node = await asyncio.to_thread(RelayProcess(example_in(tmp_path)).start)
    try:
        admin = Admin(session, node.admin_ports[0])
        status = await admin.status()
        assert status["cluster"] == []
        assert (await admin.post(notification("PHID-USER-test")))[0] == 200
        async with session.get(f"{admin.base}/cluster-status/") as response:
            assert response.status == 404
            assert "not configured" in (await response.json())["error"]

        tab = await chromium.open(f"{admin.base}/dashboard")  # the slash forgotten

        async def live() -> bool:
            text = await chromium.text(tab)
            return "live" in text and f"node {status['fingerprint']}" in text

        await eventually(live, "the status page is live and names the node")
        text = await chromium.text(tab)
        assert "the cluster-status module is off on this node" in text
        for word in ("read-only", "unhealthy", "waiting for", "disconnected"):
            assert word not in text
        # Nothing on the page is marked as bad or worrying.
        marked = "[...document.querySelectorAll('.bad, .warn')].map(e => e.textContent)"
        assert await chromium.evaluate(tab, marked) == []
    finally:
        node.signal(signal.SIGTERM)
        code, output = await asyncio.to_thread(node.wait)
    assert code == 0
    log = (tmp_path / "log" / "aphlict.log").read_text()
    assert "relay node" in log
    assert "stopped" in log
    for text in (output, log):
        trouble = [
            line
            for line in text.splitlines()
            if re.search(r" (WARNING|ERROR|CRITICAL) |Traceback", line) and AS_ROOT not in line
        ]
        assert trouble == []
