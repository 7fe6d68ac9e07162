"""Helpers for the cluster-status tests: an event sink, configs, bounded waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from relay.cluster_status.monitor import ClusterStatusMonitor
from relay.config.cluster_status import ClusterStatusConfig
from tests.mariadb_harness import MariaDBServer

#: Upper bound for anything a test waits on.
WAIT = 20.0
#: A password distinctive enough to grep for in everything the module outputs.
MONITOR_PASSWORD = "Zq7-monitor-S3CRET-pw-41d9"
MONITOR_USER = "relay_monitor"
NOPRIV_USER = "relay_nopriv"
#: Granted only REPLICATION CLIENT, which MariaDB 10.5.9+ maps to BINLOG MONITOR.
RC_USER = "relay_repclient"
#: The privilege SHOW REPLICA STATUS needs on MariaDB 10.11.
MONITOR_PRIVILEGES = ("SLAVE MONITOR",)


class EventSink:
    """The ``emit`` callback: keeps every message and lets a test await one."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self._changed.set()

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        """Messages of one type, in order."""
        return [m for m in self.messages if m["type"] == type_]

    async def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        type_: str | None = None,
        after: int = 0,
        within: float = WAIT,
    ) -> dict[str, Any]:
        """The first message from index ``after`` matching ``predicate``, within ``within`` s."""
        async with asyncio.timeout(within):
            while True:
                for message in self.messages[after:]:
                    if (type_ is None or message["type"] == type_) and predicate(message):
                        return message
                self._changed.clear()
                await self._changed.wait()


def host_entry(
    server: MariaDBServer,
    role: str,
    *,
    user: str = MONITOR_USER,
    password: str = MONITOR_PASSWORD,
    **extra: Any,
) -> dict[str, Any]:
    """One ``cluster_status.databases`` entry for a harness server."""
    return {
        "host": "127.0.0.1",
        "port": server.port,
        "role": role,
        "user": user,
        "pass": password,
        **extra,
    }


def fast_config(databases: list[dict[str, Any]], **overrides: Any) -> ClusterStatusConfig:
    """A config with short intervals and timeouts so scenarios run in seconds."""
    section: dict[str, Any] = {
        "databases": databases,
        "database_interval_seconds": 0.05,
        "repository_interval_seconds": 0.1,
        "connect_timeout_seconds": 1,
        "query_timeout_seconds": 1,
        "repository": {"enabled": False},
    }
    section.update(overrides)
    return ClusterStatusConfig.model_validate(section)


def host_of(message: dict[str, Any], port: int) -> dict[str, Any]:
    """The entry of a database message for the host on ``port``."""
    for entry in message["data"]["databases"]:
        if entry["port"] == port:
            return dict(entry)
    raise AssertionError(f"no host on port {port} in {message}")


def replication_status(message: dict[str, Any], port: int) -> str | None:
    """Replication status of the host on ``port`` in a database message."""
    replication = host_of(message, port)["replication"]
    return None if replication is None else str(replication["status"])


def connection_status(message: dict[str, Any], port: int) -> str | None:
    """Connection status of the host on ``port`` in a database message."""
    connection = host_of(message, port)["connection"]
    return None if connection is None else str(connection["status"])


async def wait_until(condition: Callable[[], bool], *, within: float = WAIT) -> None:
    """Poll a cheap in-process condition until it holds (at most ``within`` s)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


#: The ``start_monitor`` fixture: start a monitor on a config, get it and its sink.
StartMonitor = Callable[..., Awaitable[tuple[ClusterStatusMonitor, EventSink]]]
