"""What a node's processes load: every module loaded is memory kept for the process's life.

The supervisor of a ``--workers`` node serves nothing: ``relay serve
--workers 2`` runs in a child process with ``supervise`` replaced by a
stand-in that reports the loaded modules, so the whole path of the command
line up to supervising is covered (the config checks, logging, the
pidfile). A serving node without the cluster-status module loads no MySQL
client: it runs in a child until it is ready, then reports and stops.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.support import WAIT, local_config

#: Run in the child: ``relay serve --workers 2`` up to ``supervise``, then print sys.modules.
SUPERVISOR = """
import sys
import orjson
import relay.node.supervise
from relay.cli.main import main

async def report(*args):
    print(orjson.dumps(sorted(sys.modules)).decode())

relay.node.supervise.supervise = report
sys.exit(main(["serve", "--config", sys.argv[1], "--workers", "2"]))
"""

#: Run in the child: ``relay serve`` until ready, then print sys.modules and stop.
SERVING = """
import sys
import orjson
import relay.node.runtime
from relay.cli.main import main

Serving = relay.node.runtime._ServingProcess
ready = Serving.started

def started(self, node):
    ready(self, node)
    print(orjson.dumps(sorted(sys.modules)).decode())
    self.request_stop("SIGTERM")

Serving.started = started
sys.exit(main(["serve", "--config", sys.argv[1]]))
"""

#: What only the cluster-status module uses.
CLUSTER_STATUS_ONLY = ("aiomysql", "pymysql", "cryptography.hazmat", "relay.cluster_status.monitor")

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


def _loaded(tmp_path: Path, child: str, config: dict[str, object]) -> list[str]:
    """The modules ``child`` (given the config file's path) printed, as JSON."""
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(config))
    done = subprocess.run(
        [sys.executable, "-c", child, str(path)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    modules: list[str] = orjson.loads(done.stdout)
    return modules


def _among(modules: list[str], names: tuple[str, ...]) -> list[str]:
    """The modules that are one of ``names`` or below one of them."""
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in names)]


def test_the_supervisor_loads_no_listener_link_or_network_client(tmp_path: Path) -> None:
    # The URL is checked (by redis-py, in a child of its own), never connected to.
    config = local_config(broker={"url": "redis://127.0.0.1:1/0"})
    modules = _loaded(tmp_path, SUPERVISOR, config)
    assert "relay.node.supervise" in modules
    assert _among(modules, SERVING_ONLY) == []


def test_a_node_without_the_cluster_status_module_loads_no_mysql_client(tmp_path: Path) -> None:
    modules = _loaded(tmp_path, SERVING, local_config())
    assert "relay.node.node" in modules
    assert _among(modules, CLUSTER_STATUS_ONLY) == []
