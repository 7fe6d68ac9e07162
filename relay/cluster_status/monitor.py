"""The cluster-status monitor: background tasks that poll and publish.

One task per enabled database host (so a hanging host never delays the
others) and one for the repository tables. Each result goes through the
pure core (verdicts, health, mode, sync) and, when the state an operator
cares about changed, out through ``emit`` as an ordinary relay message.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from relay.cluster_status.driver import DatabaseChecker, RepositoryReader
from relay.cluster_status.errors import RepositoryReadError
from relay.cluster_status.verdicts.connection import CheckOutcome, ConnectionVerdict, is_reachable
from relay.cluster_status.verdicts.databases import (
    HostState,
    ModeVerdict,
    cluster_mode,
    judge_check,
)
from relay.cluster_status.verdicts.events import (
    DATABASES_TYPE,
    REPOSITORIES_TYPE,
    Publisher,
    database_fingerprint,
    database_payload,
    database_reading,
    repositories_reading,
    repository_fingerprint,
)
from relay.cluster_status.verdicts.health import HealthTracker
from relay.cluster_status.verdicts.replication import ReplicationVerdict
from relay.cluster_status.verdicts.repositories import (
    RepositorySyncState,
    WritingKey,
    compute_repository_sync,
    track_writing,
)
from relay.cluster_status.verdicts.resume import Resume
from relay.config.cluster_status import ClusterStatusConfig, ConnectionTarget, DatabaseHost
from relay.core.cluster_reading import ClusterStatusReading, RepositoriesReading

__all__ = ["ClusterStatusMonitor"]

logger = logging.getLogger("relay.status")

#: Service verdicts that need nobody's attention.
_HEALTHY_VERDICTS = frozenset({"Synchronized", "No Repositories"})

# Extra time the per-check safety net allows beyond the configured timeouts
# (closing the connection, scheduling).
_SAFETY_MARGIN = 2.0


@dataclass
class _Host:
    """Runtime record of one configured database host."""

    entry: DatabaseHost
    target: ConnectionTarget
    checker: DatabaseChecker | None
    health: HealthTracker
    state: HostState


class ClusterStatusMonitor:
    """Watches the configured databases and repository tables, publishing changes.

    ``emit`` receives complete relay messages (key, type, subscribers,
    uniqueID, data): once with the first state of each kind, then once per
    change. ``clock`` (monotonic) paces the polls and measures latency;
    ``wall_clock`` (unix seconds) stamps results and judges push ages.
    ``resume`` is the state another node published last (broker mode): the
    monitor starts from it rather than from nothing.
    """

    def __init__(
        self,
        config: ClusterStatusConfig,
        emit: Callable[[dict[str, Any]], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        resume: Resume | None = None,
    ) -> None:
        """Prepare the monitor; nothing is contacted before ``start``."""
        resume = resume or Resume()
        self._resume = resume
        self._config = config
        self._emit = emit
        self._clock = clock
        self._wall_clock = wall_clock
        self._observer = socket.gethostname()
        self._secrets = config.secrets()
        self._hosts = [
            self._new_host(entry, target)
            for entry, target in zip(config.databases, config.database_targets(), strict=True)
        ]
        self._db_publisher = Publisher(config.keys.databases, DATABASES_TYPE)
        self._repo_publisher = Publisher(config.keys.repositories, REPOSITORIES_TYPE)
        for publisher in (self._db_publisher, self._repo_publisher):
            if publisher.type in resume.digests:
                publisher.seed(resume.digests[publisher.type])
        self._unchecked: set[int] = set()
        self._mode: ModeVerdict | None = None
        if resume.mode == "read-only":
            # Already announced (and logged) by the node that checked before.
            self._mode = ModeVerdict("read-only", None)
        self._repo_target = config.repository_target()
        self._repo_state: RepositorySyncState | None = None
        self._repo_error: str | None = None
        self._writing_first_seen: dict[WritingKey, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Checked by the loops as well as cancelling them: on Python 3.11,
        # asyncio.wait_for (used inside the driver) can swallow a
        # cancellation that races with a connect completing.
        self._stopping = False

    def _new_host(self, entry: DatabaseHost, target: ConnectionTarget) -> _Host:
        healthy = self._resume.healthy.get(target.label, True)
        checker = None
        if not entry.disabled:
            checker = DatabaseChecker(
                target,
                connect_timeout=self._config.connect_timeout_seconds,
                query_timeout=self._config.query_timeout_seconds,
                clock=self._clock,
            )
        state = HostState(
            label=target.label,
            host=target.host,
            port=target.port,
            role=entry.role,
            disabled=entry.disabled,
            partition=tuple(entry.partition) if entry.partition is not None else None,
            healthy=healthy,
        )
        return _Host(entry, target, checker, HealthTracker(healthy=healthy), state)

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        """Start the background tasks and return at once."""
        if self._tasks:
            raise RuntimeError("the cluster-status monitor is already running")
        self._stopping = False
        self._unchecked = {i for i, h in enumerate(self._hosts) if h.checker is not None}
        for index in sorted(self._unchecked):
            host = self._hosts[index]
            self._tasks.append(
                asyncio.create_task(
                    self._watch_host(index), name=f"relay.status.db[{host.target.label}]"
                )
            )
        if not self._unchecked:
            # Nothing to wait for: the state (probably read-only) is known now.
            self._publish_databases()
        if self._config.repository.enabled:
            if self._repo_target is None:
                self._repo_error = (
                    "no enabled master to read the repository tables from; "
                    "set cluster_status.repository.host"
                )
                self._publish_repositories()
            else:
                task = asyncio.create_task(
                    self._watch_repositories(), name="relay.status.repositories"
                )
                self._tasks.append(task)
        logger.info(
            "cluster status: watching %d database host(s)%s",
            len(self._unchecked),
            f", repositories via {self._repo_target.label}" if self._repo_target else "",
        )

    async def stop(self) -> None:
        """Cancel the background tasks and wait for them (connections close with them)."""
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        # A loop whose cancellation was swallowed still ends after its
        # current (bounded) check, when it sees _stopping.
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- reading the state -------------------------------------------------

    def reading(self) -> ClusterStatusReading:
        """The full current state, without secrets, as the node's snapshot carries it."""
        states = [h.state for h in self._hosts]
        mode = cluster_mode(states)
        repositories = None
        if self._config.repository.enabled:
            repositories = self._repositories_reading(self._wall_clock())
        return ClusterStatusReading(
            instance=self._config.instance,
            observer=self._observer,
            databases_key=self._config.keys.databases,
            repositories_key=self._config.keys.repositories,
            mode=mode.mode,
            mode_reason=mode.reason,
            databases=tuple(database_reading(state) for state in states),
            repositories=repositories,
        )

    def digest(self, type_: str) -> str | None:
        """The fingerprint digest of the last message of ``type_`` emitted (or resumed from)."""
        for publisher in (self._db_publisher, self._repo_publisher):
            if publisher.type == type_:
                return publisher.digest
        return None

    # -- databases ----------------------------------------------------------

    def _deadline(self) -> float:
        """The most one check or read may take, connecting and querying included."""
        return (
            self._config.connect_timeout_seconds
            + self._config.query_timeout_seconds
            + _SAFETY_MARGIN
        )

    async def _watch_host(self, index: int) -> None:
        host = self._hosts[index]
        checker = host.checker
        assert checker is not None  # only enabled hosts get a task
        interval = self._config.database_interval_seconds
        limit = self._deadline()
        due = self._clock()
        while True:
            started = self._clock()
            try:
                async with asyncio.timeout(limit):
                    outcome = await checker.check()
            except TimeoutError:
                outcome = CheckOutcome(
                    ran=False, latency=self._clock() - started, error_message="check did not finish"
                )
            except Exception:
                # A bug, not a server problem: keep watching, say so once per check.
                logger.exception("cluster status: check of %s failed", host.target.label)
                outcome = CheckOutcome(
                    ran=False, latency=self._clock() - started, error_message="internal error"
                )
            if self._stopping:
                return
            self._record_check(index, outcome)
            due = max(due + interval, self._clock())
            await asyncio.sleep(due - self._clock())

    def _record_check(self, index: int, outcome: CheckOutcome) -> None:
        host = self._hosts[index]
        connection, replication = judge_check(outcome, is_master=host.entry.is_master)
        connection = ConnectionVerdict(connection.status, self._redact(connection.message))
        if replication is not None:
            replication = ReplicationVerdict(
                replication.status,
                replication.delay,
                self._redact(replication.message),
                replication.master_host,
            )
        now = self._wall_clock()
        change = host.health.record(is_reachable(connection.status), now)
        if change is not None:
            # Losing a database needs an operator; its recovery is news.
            logger.log(
                logging.INFO if change.healthy else logging.WARNING,
                "cluster status: database %s is now %s",
                host.target.label,
                "healthy" if change.healthy else "unhealthy",
            )
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "cluster status: %s connection=%s replication=%s latency=%.1fms",
                host.target.label,
                connection.status,
                replication.status if replication else None,
                outcome.latency * 1000,
            )
        host.state = replace(
            host.state,
            connection=connection,
            replication=replication,
            latency=outcome.latency,
            healthy=host.health.healthy,
            up=host.health.up,
            down=host.health.down,
            checked_at=now,
            health_changed_at=host.health.changed_at,
        )
        self._unchecked.discard(index)
        self._publish_databases()

    def _publish_databases(self) -> None:
        if self._unchecked:
            # The first message waits until every host has been checked once.
            return
        states = [h.state for h in self._hosts]
        mode = cluster_mode(states)
        # A change is logged, and so is a cluster found read-only at the start.
        before = self._mode.mode if self._mode is not None else "read-write"
        if mode.mode != before:
            logger.log(
                logging.WARNING if mode.mode == "read-only" else logging.INFO,
                "cluster status: mode is now %s%s",
                mode.mode,
                f" ({mode.reason})" if mode.reason else "",
            )
        self._mode = mode
        data = database_payload(
            states,
            mode,
            instance=self._config.instance,
            observer=self._observer,
            updated=self._wall_clock(),
        )
        message = self._db_publisher.offer(data, database_fingerprint(states, mode))
        if message is not None:
            self._deliver(message)

    # -- repositories -------------------------------------------------------

    async def _watch_repositories(self) -> None:
        target = self._repo_target
        assert target is not None
        reader = RepositoryReader(
            target,
            namespace=self._config.namespace,
            connect_timeout=self._config.connect_timeout_seconds,
            query_timeout=self._config.query_timeout_seconds,
        )
        interval = self._config.repository_interval_seconds
        limit = self._deadline()
        due = self._clock()
        while True:
            try:
                async with asyncio.timeout(limit):
                    rows = await reader.read()
            except RepositoryReadError as exc:
                self._set_repositories(None, self._redact(str(exc)))
            except TimeoutError:
                self._set_repositories(None, "reading the repository tables did not finish")
            except Exception:
                logger.exception("cluster status: reading the repository tables failed")
                self._set_repositories(None, "internal error")
            else:
                now = self._wall_clock()
                self._writing_first_seen = track_writing(
                    self._writing_first_seen, rows.versions, now
                )
                state = compute_repository_sync(
                    rows,
                    now=now,
                    write_interruption_seconds=self._config.write_interruption_seconds,
                    writing_first_seen=self._writing_first_seen,
                )
                self._set_repositories(state, None)
            if self._stopping:
                return
            due = max(due + interval, self._clock())
            await asyncio.sleep(due - self._clock())

    def _set_repositories(self, state: RepositorySyncState | None, error: str | None) -> None:
        self._log_repository_changes(self._repo_state, state, error)
        self._repo_state = state
        self._repo_error = error
        self._publish_repositories()

    def _log_repository_changes(
        self,
        old: RepositorySyncState | None,
        new: RepositorySyncState | None,
        error: str | None,
    ) -> None:
        if new is None:
            if error != self._repo_error:
                logger.warning("cluster status: repository tables unavailable: %s", error)
            return
        if self._repo_error is not None:
            logger.info("cluster status: repository tables readable again")
        before = {s.phid: s.verdict for s in old.services} if old else {}
        for service in new.services:
            if before.get(service.phid) != service.verdict:
                # Out of sync (or worse) needs an operator; back in sync is news.
                healthy = service.verdict in _HEALTHY_VERDICTS
                logger.log(
                    logging.INFO if healthy else logging.WARNING,
                    "cluster status: repository service %s is %s",
                    service.name,
                    service.verdict,
                )

    def _repositories_reading(self, now: float) -> RepositoriesReading:
        return repositories_reading(
            self._repo_state,
            source=self._repo_target.label if self._repo_target else None,
            error=self._repo_error,
            instance=self._config.instance,
            observer=self._observer,
            updated=now,
        )

    def _publish_repositories(self) -> None:
        data = self._repositories_reading(self._wall_clock()).as_dict()
        fingerprint = repository_fingerprint(self._repo_state, self._repo_error)
        message = self._repo_publisher.offer(data, fingerprint)
        if message is not None:
            self._deliver(message)

    # -- helpers ------------------------------------------------------------

    def _deliver(self, message: dict[str, Any]) -> None:
        try:
            self._emit(message)
        except Exception:
            # The core's delivery failing must not stop the watching.
            logger.exception("cluster status: delivering %s failed", message["type"])

    def _redact(self, text: str | None) -> str | None:
        """Blank out any configured password that a server message might echo."""
        if text is None:
            return None
        for secret in self._secrets:
            text = text.replace(secret, "********")
        return text
