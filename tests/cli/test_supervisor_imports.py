"""The supervisor of a ``--workers`` node loads what supervising needs, not what serving does.

It serves nothing, and every module it loads is memory it keeps for the
node's life (issue 20). ``relay serve --workers 2`` runs in a child process
with ``supervise`` replaced by a stand-in that reports the loaded modules,
so the whole path of the command line up to supervising is covered: the
config checks, logging, the pidfile.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.support import WAIT, local_config

#: Run in the child: ``relay serve --workers 2`` up to ``supervise``, then print sys.modules.
CHILD = """
import sys
import orjson
import relay.node.supervise
from relay.cli.main import main

async def report(*args):
    print(orjson.dumps(sorted(sys.modules)).decode())

relay.node.supervise.supervise = report
sys.exit(main(["serve", "--config", sys.argv[1], "--workers", "2"]))
"""

#: What serving needs and supervising does not (a name, or any module below it).
SERVING_ONLY = (
    "aiohttp",
    "redis",
    "aiomysql",
    "prometheus_client",
    "websockets",
    "multidict",
    "yarl",
    "relay.node.node",
    "relay.node.runtime",
    "relay.core.hub",
    "relay.listeners.client_listener",
    "relay.broker",
    "relay.peering",
    "relay.observe",
    "relay.cluster_status",
    "relay.cli.client_commands",
)


def test_the_supervisor_loads_no_listener_link_or_network_client(tmp_path: Path) -> None:
    path = tmp_path / "relay.json"
    # The URL is checked (by redis-py, in a child of its own), never connected to.
    path.write_bytes(orjson.dumps(local_config(broker={"url": "redis://127.0.0.1:1/0"})))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    modules = orjson.loads(done.stdout)
    assert "relay.node.supervise" in modules
    loaded = [
        module
        for module in modules
        if any(module == name or module.startswith(name + ".") for name in SERVING_ONLY)
    ]
    assert loaded == []
