"""The state of each database host, and the cluster mode derived from it.

Pure. A ``HostState`` gathers what is known about one configured host
(its last check, its health); ``cluster_mode`` says whether Phorge would
run read-write or degrade to read-only given those states.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from relay.cluster_status.verdicts.connection import (
    CheckOutcome,
    ConnectionVerdict,
    connection_verdict,
)
from relay.cluster_status.verdicts.replication import ReplicationVerdict, replication_verdict

__all__ = [
    "ClusterMode",
    "HostState",
    "ModeVerdict",
    "cluster_mode",
    "judge_check",
]

ClusterMode = Literal["read-write", "read-only"]


@dataclass(frozen=True)
class HostState:
    """Everything known about one configured database host.

    ``connection`` and ``replication`` are None until the first check
    finishes (and forever for a disabled host, which is never contacted);
    ``replication`` is also None when the status query could not run.
    Times are wall-clock seconds.
    """

    label: str
    host: str
    port: int
    role: Literal["master", "replica"]
    disabled: bool = False
    partition: tuple[str, ...] | None = None
    connection: ConnectionVerdict | None = None
    replication: ReplicationVerdict | None = None
    latency: float | None = None
    healthy: bool = True
    up: int = 0
    down: int = 0
    checked_at: float | None = None
    health_changed_at: float | None = None

    @property
    def is_master(self) -> bool:
        """True for the ``master`` role."""
        return self.role == "master"


@dataclass(frozen=True)
class ModeVerdict:
    """The cluster mode and, for read-only, the reason in plain words."""

    mode: ClusterMode
    reason: str | None = None


def judge_check(
    outcome: CheckOutcome, *, is_master: bool
) -> tuple[ConnectionVerdict, ReplicationVerdict | None]:
    """Turn one check outcome into its connection and replication verdicts.

    Replication is judged only when the status query ran.
    """
    connection = connection_verdict(outcome)
    if not outcome.ran:
        return connection, None
    return connection, replication_verdict(outcome.row, is_master=is_master)


def cluster_mode(hosts: Sequence[HostState]) -> ModeVerdict:
    """Read-write when every enabled master is healthy, read-only otherwise.

    With no master configured, or every master disabled, Phorge degrades to
    read-only; so it does when a master is unhealthy.
    """
    masters = [h for h in hosts if h.is_master]
    if not masters:
        return ModeVerdict("read-only", "no master is configured")
    enabled = [h for h in masters if not h.disabled]
    if not enabled:
        return ModeVerdict("read-only", "the master is disabled")
    unhealthy = [h.label for h in enabled if not h.healthy]
    if unhealthy:
        return ModeVerdict("read-only", f"master {', '.join(unhealthy)} is unhealthy")
    return ModeVerdict("read-write")
