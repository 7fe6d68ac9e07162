"""The MariaDB harness itself: ports, kill and restart, loud failure."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests import mariadb_harness
from tests.mariadb_harness import MariaDBError, MariaDBFactory, require_binaries


def test_kill_and_restart_keep_port_and_data(mariadb: MariaDBFactory) -> None:
    server = mariadb.start("solo", server_id=1)
    port = server.port
    server.sql(
        "CREATE DATABASE h", "CREATE TABLE h.t (v INT) ENGINE=InnoDB", "INSERT INTO h.t VALUES (42)"
    )
    server.kill()
    assert not server.running
    server.restart()
    assert server.port == port
    assert server.sql("SELECT v FROM h.t") == [{"v": 42}]
    # The grant tables are in force: a wrong password is refused.
    server.create_user("someone", "right")
    assert server.sql("SELECT plugin FROM mysql.user WHERE user = 'someone'") == [
        {"plugin": "mysql_native_password"}
    ]


def test_a_taken_port_is_retried(mariadb: MariaDBFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real = mariadb_harness.pick_free_port

        def pick() -> int:
            return next(ports, None) or real()

        monkeypatch.setattr(mariadb_harness, "pick_free_port", pick)
        server = mariadb.start("retry", server_id=1)
        assert server.port != taken
        assert server.sql("SELECT 1 AS one") == [{"one": 1}]


def test_missing_binaries_fail_loudly_naming_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mariadb_harness, "MARIADBD", Path("/nonexistent/mariadbd"))
    with pytest.raises(MariaDBError, match="install the Debian package 'mariadb-server'"):
        require_binaries()


def test_a_server_that_cannot_start_says_why(mariadb: MariaDBFactory, tmp_path: Path) -> None:
    broken = mariadb.create("broken", server_id=1)
    broken.template = tmp_path / "no-such-template"
    (tmp_path / "no-such-template").mkdir()  # an empty datadir: no system tables
    with pytest.raises(MariaDBError, match="did not start"):
        broken.start(deadline=20)
