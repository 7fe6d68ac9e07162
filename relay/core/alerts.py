"""Alerts: what in a node's snapshot needs someone, and when an episode begins and ends.

Pure. ``problems(snapshot)`` lists what is wrong now, each under a stable
key (``read-only``, ``database-unhealthy:db1:3306``...), and
``undecided(snapshot)`` what it cannot judge now. ``AlertTracker``
turns those readings into episodes on an injected clock: an alert when a
problem has lasted its bound (0 for most, ``out_of_sync_seconds`` for
repositories), one more when it is gone, nothing in between; a kind in
``ONE_SHOT`` (a node joining) is told once, as a notice, and has no end.
``alert_body`` and ``signature`` make the webhook's body and its
HMAC-SHA256 header.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from relay.core.cluster_reading import ClusterStatusReading
from relay.core.snapshot import NodeSnapshot

__all__ = [
    "ONE_SHOT",
    "AlertEvent",
    "AlertTracker",
    "Problem",
    "alert_body",
    "problems",
    "signature",
    "undecided",
]

#: Replication statuses that mean a replica is not keeping up with its master.
BROKEN_REPLICATION = frozenset({"not-replicating", "replica-none", "replica-slow"})
#: Repository service verdicts that need nobody's attention.
HEALTHY_SERVICES = frozenset({"Synchronized", "No Repositories"})
#: Kinds told once (``"state": "notice"``), with no end to follow.
ONE_SHOT = frozenset({"node-joined"})


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong now: its kind, what it is about, and a line for people."""

    kind: str
    subject: str | None
    summary: str

    @property
    def key(self) -> str:
        """The same key for the same problem on every reading and every node."""
        return self.kind if self.subject is None else f"{self.kind}:{self.subject}"


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An episode beginning (``state`` "firing") or ending ("resolved"), or a one-shot "notice"."""

    problem: Problem
    state: str
    #: When the problem was first seen (clock seconds).
    since: float


def problems(snapshot: NodeSnapshot) -> list[Problem]:
    """Everything to tell in ``snapshot``: Phorge's databases, repositories, nodes, peers, Redis."""
    found: list[Problem] = []
    status = snapshot.cluster_status
    if status is not None:
        found += _status_problems(status)
    if snapshot.nodes is not None:
        found += _node_problems(snapshot.nodes)
    for peer in snapshot.peers:
        if not peer.is_self and peer.state in ("down", "refused"):
            name = f"{peer.host}:{peer.port}"
            found.append(Problem("peer-down", name, f"peer {name} is {peer.state}"))
    broker = snapshot.broker
    if broker is not None and broker.state == "down":
        found.append(Problem("broker-lost", None, f"Redis {broker.url} is down"))
    return found


def _status_problems(status: ClusterStatusReading) -> Iterable[Problem]:
    if status.mode == "read-only":
        reason = status.mode_reason
        yield Problem("read-only", None, "Phorge is read-only" + (f" ({reason})" if reason else ""))
    for database in status.databases:
        if database.disabled:
            continue
        ref = database.ref
        if not database.health.healthy:
            yield Problem("database-unhealthy", ref, f"database {ref} is unhealthy")
        replication = database.replication
        if replication is not None and replication.status in BROKEN_REPLICATION:
            yield Problem("replication-broken", ref, f"database {ref} is {replication.status}")
    services = () if status.repositories is None else status.repositories.services
    for service in services:
        if service.verdict not in HEALTHY_SERVICES:
            name = service.name
            yield Problem(
                "repositories-out-of-sync", name, f"repository service {name} is {service.verdict}"
            )


def undecided(snapshot: NodeSnapshot) -> frozenset[str]:
    """What ``snapshot`` cannot judge now: problem keys, or whole kinds, to leave as they were.

    A database whose last check failed has no replication reading (the status
    query did not run), and repository tables that could not be read list no
    service. Neither says that a problem found before is over: a replica
    still broken, or a service still out of sync, must not be told resolved
    because its database did not answer for a moment.
    """
    status = snapshot.cluster_status
    if status is None:
        return frozenset()
    found = {
        f"replication-broken:{database.ref}"
        for database in status.databases
        if not database.disabled and database.replication is None
    }
    repositories = status.repositories
    if repositories is not None and not repositories.available:
        found.add("repositories-out-of-sync")
    return frozenset(found)


def _node_problems(nodes: Mapping[str, Any]) -> Iterable[Problem]:
    """Nodes that left the cluster, and those that joined it (``relay.links.turnover``)."""
    for place in nodes.get("left", ()):
        yield Problem("node-left", place, f"node {place} left the cluster")
    for place in nodes.get("joined", ()):
        yield Problem("node-joined", place, f"node {place} joined the cluster")


class AlertTracker:
    """Episodes of problems: each alerted once when it has lasted its bound, and once at its end."""

    def __init__(self, clock: Callable[[], float], bounds: Mapping[str, float]) -> None:
        """Time with ``clock``; a problem of kind ``k`` must last ``bounds[k]`` s (default 0)."""
        self._clock = clock
        self._bounds = bounds
        self._first_seen: dict[str, float] = {}
        self._firing: dict[str, Problem] = {}

    def update(
        self, now_wrong: Iterable[Problem], undecided: frozenset[str] = frozenset()
    ) -> list[AlertEvent]:
        """The episodes that began or ended, given everything wrong now.

        A problem under a key or kind in ``undecided`` (see ``undecided()``)
        that is not in ``now_wrong`` is left as it was: an episode goes on,
        and one not yet alerted keeps the time it was first seen.
        """
        now = self._clock()
        current = {problem.key: problem for problem in now_wrong}

        def gone(key: str) -> bool:
            # A key is its kind, then ":" and the subject; no kind has a colon.
            return key not in current and not ({key, key.partition(":")[0]} & undecided)

        events = []
        for key, problem in self._firing.copy().items():
            if gone(key):
                del self._firing[key]
                since = self._first_seen.pop(key)
                if problem.kind not in ONE_SHOT:
                    events.append(AlertEvent(problem, "resolved", since))
        for key in list(self._first_seen):
            if gone(key):
                del self._first_seen[key]  # gone before it lasted its bound
        for key, problem in current.items():
            since = self._first_seen.setdefault(key, now)
            if key not in self._firing and now - since >= self._bounds.get(problem.kind, 0.0):
                self._firing[key] = problem
                state = "notice" if problem.kind in ONE_SHOT else "firing"
                events.append(AlertEvent(problem, state, since))
        return events


def alert_body(event: AlertEvent, *, node: str, at: float, started_at: float) -> bytes:
    """The webhook's JSON body for ``event`` (README, "Alerts").

    ``at`` and ``started_at`` are unix seconds: now, and when the problem was
    first seen.
    """
    problem = event.problem
    return orjson.dumps(
        {
            "state": event.state,
            "kind": problem.kind,
            "subject": problem.subject,
            "key": problem.key,
            "summary": problem.summary,
            "since": round(started_at, 3),
            "at": round(at, 3),
            "node": node,
        }
    )


def signature(body: bytes, secret: str) -> str:
    """The ``X-Relay-Signature`` header: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
