"""``relay check-config --connect`` against a real MariaDB: the repository tables are read too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.cluster_status.helpers import MONITOR_PASSWORD, MONITOR_USER
from tests.cluster_status.phorge_tables import PhorgeTables
from tests.support import WAIT, local_config


def check_connect(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", "check-config", "--connect", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def test_connect_reads_the_repository_tables_as_the_monitor_does(
    phorge: PhorgeTables, tmp_path: Path
) -> None:
    """It said OK for a user the monitor then found without SELECT on them, every interval."""
    server = phorge.server
    config = local_config(
        cluster_status={
            "namespace": phorge.ns,
            "databases": [{"host": "127.0.0.1", "port": server.port, "role": "master"}],
            "defaults": {"user": MONITOR_USER, "pass": MONITOR_PASSWORD},
        }
    )
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(config))
    reached = check_connect(path)
    assert reached.returncode == 0, reached.stderr
    assert "reached 1 database" in reached.stdout
    server.sql(
        "SET SESSION sql_log_bin = 0", f"REVOKE SELECT ON *.* FROM '{MONITOR_USER}'@'127.0.0.1'"
    )
    refused = check_connect(path)
    assert refused.returncode == 1
    [problem] = refused.stderr.splitlines()
    assert problem.startswith(
        f"relay: {path}: cluster_status.repository: cannot read the tables on "
        f"127.0.0.1:{server.port}: #1142 SELECT command denied"
    )
    assert MONITOR_PASSWORD not in refused.stdout + refused.stderr
