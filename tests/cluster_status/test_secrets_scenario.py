"""No password in any event, snapshot, table, log line or error: grep them all."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from relay.cli.cluster_table import render_table
from relay.cluster_status.verdicts.events import DATABASES_TYPE, REPOSITORIES_TYPE
from relay.config.cluster_status import ClusterStatusConfig
from tests.cluster_status.helpers import MONITOR_PASSWORD, MONITOR_USER, StartMonitor, host_of
from tests.cluster_status.phorge_tables import PhorgeTables
from tests.mariadb_harness import MariaDBServer, pick_free_port

WRONG_PASSWORD = "Wrong-SECRET-pw-b83f"
FILE_PASSWORD = "File-SECRET-pw-61aa"
ENV_PASSWORD = "Env-SECRET-pw-0c2d"
ALL_SECRETS = (MONITOR_PASSWORD, WRONG_PASSWORD, FILE_PASSWORD, ENV_PASSWORD)


async def test_no_password_anywhere(
    phorge: PhorgeTables,
    start_monitor: StartMonitor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="relay")
    server: MariaDBServer = phorge.server
    server.create_user(WRONG_PASSWORD, "something-else")
    secret_file = tmp_path / "pass"
    secret_file.write_text(FILE_PASSWORD + "\n")
    monkeypatch.setenv("RELAY_STATUS_TEST_PASS", ENV_PASSWORD)
    dead_port = pick_free_port()
    section: dict[str, Any] = {
        "databases": [
            # Right credentials: okay.
            {
                "host": "127.0.0.1",
                "port": server.port,
                "role": "master",
                "user": MONITOR_USER,
                "pass": MONITOR_PASSWORD,
            },
            # Wrong password from a file, for a user named like another
            # configured password: auth, and the server's "Access denied for
            # user '...'" echoes that secret, which relay must blank out.
            {
                "host": "localhost",
                "port": server.port,
                "role": "replica",
                "user": WRONG_PASSWORD,
                "pass_file": str(secret_file),
            },
            # Password from the environment, nothing listening: fail.
            {
                "host": "127.0.0.1",
                "port": dead_port,
                "role": "replica",
                "pass_env": "RELAY_STATUS_TEST_PASS",
            },
        ],
        # Repository tables read with a wrong password: unavailable.
        "repository": {
            "host": "127.0.0.1",
            "port": server.port,
            "user": MONITOR_USER,
            "pass": WRONG_PASSWORD,
        },
        "namespace": phorge.ns,
        "database_interval_seconds": 0.05,
        "repository_interval_seconds": 0.1,
        "connect_timeout_seconds": 1,
        "query_timeout_seconds": 1,
    }
    config = ClusterStatusConfig.model_validate(section)
    monitor, sink = await start_monitor(config)
    databases = await sink.wait_for(lambda m: m["type"] == DATABASES_TYPE)
    repositories = await sink.wait_for(lambda m: m["type"] == REPOSITORIES_TYPE)
    assert host_of(databases, server.port)["connection"]["status"] == "okay"
    statuses = [d["connection"]["status"] for d in databases["data"]["databases"]]
    assert statuses == ["okay", "auth", "fail"]
    echoed = databases["data"]["databases"][1]["connection"]["message"]
    assert "'********'" in echoed
    assert repositories["data"]["available"] is False
    assert "Access denied" in repositories["data"]["error"]

    # Health transitions and mode changes reach the INFO log too.
    await asyncio.to_thread(server.kill)
    await sink.wait_for(lambda m: m["type"] == DATABASES_TYPE and m["data"]["mode"] == "read-only")

    snapshot = monitor.reading().as_dict()
    haystacks = {
        "messages": json.dumps(sink.messages),
        "snapshot": json.dumps(snapshot),
        "table": render_table(snapshot),
        "log": caplog.text,
        "config": repr(config) + str(config) + config.model_dump_json(),
        "targets": repr(config.database_targets()) + repr(config.repository_target()),
    }
    assert "unhealthy" in haystacks["log"]
    for where, text in haystacks.items():
        for secret in ALL_SECRETS:
            if secret == WRONG_PASSWORD and where in ("config", "targets"):
                continue  # it is also a user name there, and user names are shown
            assert secret not in text, f"password found in {where}"
