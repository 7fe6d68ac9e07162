"""``relay check-config --connect``: the broker and the cluster's databases, connected to.

Apart from ``preflight`` (what ``serve`` checks too) because it needs the
network clients, redis-py and aiomysql, which a ``--workers`` node's
supervisor, running ``preflight``'s checks, never loads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from relay.broker.connect import reach as broker_reach
from relay.cluster_status.driver import DatabaseChecker
from relay.config import Config
from relay.config.broker import BrokerConfig
from relay.config.cluster_status import ClusterStatusConfig, ConnectionTarget


async def reach(config: Config) -> list[str]:
    """``check-config --connect``: what of the broker and the cluster's databases cannot be reached.

    The broker is connected to and pinged as the broker link would (same
    timeouts, password and TLS); each enabled database of the cluster-status
    module is connected to and asked for its replica status, as the monitor
    does. Each problem names the field, never a password.
    """
    checks: list[Awaitable[str | None]] = []
    if config.broker is not None:
        checks.append(_broker_reached(config.broker))
    status = config.cluster_status
    if status is not None:
        targets = status.database_targets()
        for index, (entry, target) in enumerate(zip(status.databases, targets, strict=True)):
            if not entry.disabled:
                checks.append(_database_reached(index, target, status))
    return [problem for problem in await asyncio.gather(*checks) if problem is not None]


async def _broker_reached(broker: BrokerConfig) -> str | None:
    problem = await broker_reach(broker, "check-config")
    return None if problem is None else f"broker.url: cannot reach {broker.display_url}: {problem}"


async def _database_reached(
    index: int, target: ConnectionTarget, status: ClusterStatusConfig
) -> str | None:
    checker = DatabaseChecker(
        target,
        connect_timeout=status.connect_timeout_seconds,
        query_timeout=status.query_timeout_seconds,
        clock=time.monotonic,
    )
    outcome = await checker.check()
    if outcome.ran:
        return None
    return (
        f"cluster_status.databases[{index}]: cannot check {target.label}: "
        f"{outcome.error_message or 'no answer'}"
    )
