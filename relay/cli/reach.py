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
from relay.cluster_status.driver import DatabaseChecker, RepositoryReader
from relay.cluster_status.errors import RepositoryReadError
from relay.config import Config
from relay.config.broker import BrokerConfig
from relay.config.cluster_status import ClusterStatusConfig, ConnectionTarget


async def reach(config: Config) -> list[str]:
    """``check-config --connect``: what of the broker and the cluster's databases cannot be reached.

    The broker is connected to and pinged as the broker link would (same
    timeouts, password and TLS); each enabled database of the cluster-status
    module is connected to and asked for its replica status, and the
    repository tables are read, as the monitor does (unless from a database
    found unreachable already). Each problem names the field, never a password.
    """
    checks: list[Awaitable[str | None]] = []
    if config.broker is not None:
        checks.append(_broker_reached(config.broker))
    status = config.cluster_status
    checked: list[ConnectionTarget] = []
    if status is not None:
        targets = status.database_targets()
        for index, (entry, target) in enumerate(zip(status.databases, targets, strict=True)):
            if not entry.disabled:
                checks.append(_database_reached(index, target, status))
                checked.append(target)
    found = await asyncio.gather(*checks)
    problems = [problem for problem in found if problem is not None]
    repository = None if status is None else status.repository_target()
    if status is not None and repository is not None:
        # The databases' outcomes are the last ones, in the order of ``checked``.
        outcomes = found[len(found) - len(checked) :]
        failed = {t.label for t, problem in zip(checked, outcomes, strict=True) if problem}
        if repository.label not in failed:
            problems += await _repository_read(repository, status)
    return problems


async def _broker_reached(broker: BrokerConfig) -> str | None:
    problem = await broker_reach(broker, "check-config")
    return None if problem is None else f"broker.url: cannot reach {broker.display_url}: {problem}"


async def _repository_read(target: ConnectionTarget, status: ClusterStatusConfig) -> list[str]:
    """Read the repository tables once, as the monitor does; the problem, if any."""
    reader = RepositoryReader(
        target,
        namespace=status.namespace,
        connect_timeout=status.connect_timeout_seconds,
        query_timeout=status.query_timeout_seconds,
    )
    try:
        await reader.read()
    except RepositoryReadError as exc:
        return [f"cluster_status.repository: cannot read the tables on {target.label}: {exc}"]
    return []


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
