"""Fixtures for the cluster-status tests: MariaDB servers, Phorge tables, monitors."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.cluster_status.monitor import ClusterStatusMonitor
from relay.config.cluster_status import ClusterStatusConfig
from tests.cluster_status.helpers import (
    MONITOR_PASSWORD,
    MONITOR_PRIVILEGES,
    MONITOR_USER,
    NOPRIV_USER,
    RC_USER,
    EventSink,
    StartMonitor,
)
from tests.cluster_status.phorge_tables import PhorgeTables
from tests.mariadb_harness import MariaDBFactory, MariaDBServer, make_template

_HERE = Path(__file__).parent
#: Per-test timeouts: pure tests are instant, scenarios start servers.
PURE_TIMEOUT = 30
SCENARIO_TIMEOUT = 90


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test of this directory a timeout unless it sets its own."""
    for item in items:
        if _HERE not in item.path.parents or item.get_closest_marker("timeout"):
            continue
        scenario = "scenario" in item.path.name
        item.add_marker(pytest.mark.timeout(SCENARIO_TIMEOUT if scenario else PURE_TIMEOUT))


@pytest.fixture(scope="session")
def mariadb_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised data directory, made once, that servers are copied from."""
    return make_template(tmp_path_factory.mktemp("mariadb-template") / "data")


@pytest.fixture
def mariadb(mariadb_template: Path, tmp_path: Path) -> Iterator[MariaDBFactory]:
    """Start servers for one test; all are killed and removed at the end."""
    factory = MariaDBFactory(tmp_path / "servers", mariadb_template)
    yield factory
    factory.close()


def add_monitor_users(server: MariaDBServer) -> None:
    """The monitoring user (SLAVE MONITOR), one with only REPLICATION CLIENT, one with nothing."""
    server.create_user(MONITOR_USER, MONITOR_PASSWORD, MONITOR_PRIVILEGES)
    server.create_user(RC_USER, MONITOR_PASSWORD, ["REPLICATION CLIENT"])
    server.create_user(NOPRIV_USER, MONITOR_PASSWORD)


@pytest.fixture(scope="module")
def shared_pair(
    mariadb_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[MariaDBServer, MariaDBServer]]:
    """A replicating master and replica shared by tests that only observe them."""
    factory = MariaDBFactory(tmp_path_factory.mktemp("shared-pair"), mariadb_template)
    try:
        master = factory.start("master", server_id=1)
        replica = factory.start("replica", server_id=2)
        add_monitor_users(master)
        add_monitor_users(replica)
        replica.replicate_from(master)
        yield master, replica
    finally:
        factory.close()


@pytest.fixture
def pair(mariadb: MariaDBFactory) -> tuple[MariaDBServer, MariaDBServer]:
    """A replicating master and replica of this test's own, free to break."""
    master = mariadb.start("master", server_id=1)
    replica = mariadb.start("replica", server_id=2)
    add_monitor_users(master)
    add_monitor_users(replica)
    replica.replicate_from(master)
    return master, replica


@pytest.fixture
def phorge(mariadb: MariaDBFactory) -> Iterator[PhorgeTables]:
    """Phorge's repository and Almanac tables on a server of their own."""
    server = mariadb.start("phorge", server_id=10)
    add_monitor_users(server)
    server.sql(
        "SET SESSION sql_log_bin = 0",
        f"GRANT SELECT ON *.* TO '{MONITOR_USER}'@'127.0.0.1'",
    )
    namespace = "t" + secrets.token_hex(4)
    tables = PhorgeTables(server, namespace).create()
    yield tables
    if server.running:  # a test may have killed it
        tables.drop()


@pytest.fixture
async def start_monitor() -> AsyncIterator[StartMonitor]:
    """Start monitors with an event sink; all are stopped at the end."""
    monitors: list[ClusterStatusMonitor] = []

    async def start(
        config: ClusterStatusConfig, **kwargs: Any
    ) -> tuple[ClusterStatusMonitor, EventSink]:
        sink = EventSink()
        monitor = ClusterStatusMonitor(config, sink, **kwargs)
        await monitor.start()
        monitors.append(monitor)
        return monitor, sink

    yield start
    for monitor in reversed(monitors):
        await monitor.stop()
