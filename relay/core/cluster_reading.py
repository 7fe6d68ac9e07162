"""The cluster-status module's view of Phorge, as typed readings for the node's snapshot.

The module (``relay.cluster_status``) turns its verdicts into these; the
metrics and the status page read their fields, and ``as_dict`` gives the JSON
that ``GET /cluster-status/`` serves and the status messages carry, key for
key (camelCase, as Phorge's own status pages name them). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ConnectionReading:
    """One database host's last check: Phorge's connection status, and why."""

    #: "okay", "fail", "auth" or "replication-client".
    status: str
    message: str | None
    latency_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        """The JSON of the reading."""
        return {"status": self.status, "message": self.message, "latencyMs": self.latency_ms}


@dataclass(frozen=True, slots=True)
class ReplicationReading:
    """One database host's replication, as Phorge judges it."""

    status: str
    #: Seconds behind the master; None when unknown.
    delay: int | None
    message: str | None
    master_host: str | None

    def as_dict(self) -> dict[str, Any]:
        """The JSON of the reading."""
        return {
            "status": self.status,
            "delay": self.delay,
            "message": self.message,
            "masterHost": self.master_host,
        }


@dataclass(frozen=True, slots=True)
class HealthReading:
    """One database host's health: the last ``window`` checks decide it."""

    healthy: bool
    up: int
    down: int
    window: int
    #: Unix times of the last check and of the last change of health.
    checked_at: float | None
    changed_at: float | None

    def as_dict(self) -> dict[str, Any]:
        """The JSON of the reading."""
        return {
            "healthy": self.healthy,
            "up": self.up,
            "down": self.down,
            "window": self.window,
            "checkedAt": self.checked_at,
            "changedAt": self.changed_at,
        }


@dataclass(frozen=True, slots=True)
class DatabaseReading:
    """One configured database host and what its checks found."""

    #: The host as the config names it (``cluster_status.databases[i]``).
    ref: str
    host: str
    port: int
    #: "master" or "replica".
    role: str
    disabled: bool
    partition: tuple[str, ...] | None
    #: None until the first check (and always for a disabled host).
    connection: ConnectionReading | None
    replication: ReplicationReading | None
    health: HealthReading

    def as_dict(self) -> dict[str, Any]:
        """The JSON of the reading."""
        return {
            "ref": self.ref,
            "host": self.host,
            "port": self.port,
            "role": self.role,
            "disabled": self.disabled,
            "partition": None if self.partition is None else list(self.partition),
            "connection": None if self.connection is None else self.connection.as_dict(),
            "replication": None if self.replication is None else self.replication.as_dict(),
            "health": self.health.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class DeviceReading:
    """One device's working copy of one repository."""

    device: str
    device_phid: str
    version: int | None
    active: bool
    leader: bool
    writing: bool
    lock_owner: str | None
    last_writer: str | None
    last_write_at: float | None

    def as_dict(self) -> dict[str, Any]:
        """The JSON of the reading."""
        return {
            "device": self.device,
            "devicePHID": self.device_phid,
            "version": self.version,
            "active": self.active,
            "leader": self.leader,
            "writing": self.writing,
            "lockOwner": self.lock_owner,
            "lastWriter": self.last_writer,
            "lastWriteAt": self.last_write_at,
        }


@dataclass(frozen=True, slots=True)
class WriteLockReading:
    """A device holding a repository's durable write lock."""

    device: str
    lock_owner: str | None
    writer: str | None
    since: float | None
    held_for: float | None
    interrupted: bool

    def as_dict(self) -> dict[str, Any]:
        """The JSON of the reading."""
        return {
            "device": self.device,
            "lockOwner": self.lock_owner,
            "writer": self.writer,
            "since": self.since,
            "heldFor": self.held_for,
            "interrupted": self.interrupted,
        }


@dataclass(frozen=True, slots=True)
class RepositoryReading:
    """The sync state of one clustered repository."""

    phid: str
    name: str
    monogram: str
    sync: str
    leader_version: int | None
    leaders: tuple[str, ...]
    #: (device, version) of each device behind the leaders.
    followers: tuple[tuple[str, int | None], ...]
    devices: tuple[DeviceReading, ...]
    last_write: float | None
    lag: float | None
    failures: tuple[str, ...]
    write_lock: WriteLockReading | None
    message: str | None

    def as_dict(self) -> dict[str, Any]:
        """The JSON of the reading."""
        return {
            "phid": self.phid,
            "name": self.name,
            "monogram": self.monogram,
            "sync": self.sync,
            "leaderVersion": self.leader_version,
            "leaders": list(self.leaders),
            "followers": [
                {"device": device, "version": version} for device, version in self.followers
            ],
            "devices": [device.as_dict() for device in self.devices],
            "lastWrite": self.last_write,
            "lag": self.lag,
            "failures": list(self.failures),
            "writeLock": None if self.write_lock is None else self.write_lock.as_dict(),
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class ServiceReading:
    """The sync state of one repository service, with its repositories."""

    phid: str
    name: str
    closed: bool
    active_devices: tuple[str, ...]
    devices: tuple[str, ...]
    #: "Synchronized", "Partial", "Unsynchronized", ... as Phorge words it.
    verdict: str
    lag: float | None
    messages: tuple[str, ...]
    repositories: tuple[RepositoryReading, ...]

    def as_dict(self) -> dict[str, Any]:
        """The JSON of the reading."""
        return {
            "phid": self.phid,
            "name": self.name,
            "closed": self.closed,
            "activeDevices": list(self.active_devices),
            "devices": list(self.devices),
            "verdict": self.verdict,
            "lag": self.lag,
            "messages": list(self.messages),
            "repositories": [repository.as_dict() for repository in self.repositories],
        }


@dataclass(frozen=True, slots=True)
class RepositoriesReading:
    """Every repository service, as read from Phorge's tables at ``updated`` (unix time)."""

    instance: str
    observer: str
    updated: float
    #: The database the tables were read from.
    source: str | None
    #: Why the tables could not be read (then ``services`` is empty).
    error: str | None
    available: bool
    services: tuple[ServiceReading, ...]

    def as_dict(self) -> dict[str, Any]:
        """The JSON of the reading (the ``data`` of a repository status message)."""
        return {
            "kind": "repositories",
            "instance": self.instance,
            "observer": self.observer,
            "updated": self.updated,
            "source": self.source,
            "available": self.available,
            "error": self.error,
            "services": [service.as_dict() for service in self.services],
        }


@dataclass(frozen=True, slots=True)
class ClusterStatusReading:
    """What the cluster-status module observes now: databases, mode, repositories."""

    #: The relay instance its messages go to, and the host that observes.
    instance: str
    observer: str
    #: The keys its database and repository messages are announced on.
    databases_key: str
    repositories_key: str
    #: "read-write" or "read-only", and for read-only the reason in plain words.
    mode: str
    mode_reason: str | None
    databases: tuple[DatabaseReading, ...]
    #: None when the repository checks are off.
    repositories: RepositoriesReading | None
    #: Broker mode: ``{"holder": bool, "token": int | None}``, whether this node
    #: runs the checks for the cluster; None without a broker.
    lease: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``GET /cluster-status/``."""
        lease = {} if self.lease is None else {"lease": dict(self.lease)}
        return {
            "instance": self.instance,
            "observer": self.observer,
            "keys": {"databases": self.databases_key, "repositories": self.repositories_key},
            "mode": self.mode,
            "modeReason": self.mode_reason,
            "databases": [database.as_dict() for database in self.databases],
            "repositories": None if self.repositories is None else self.repositories.as_dict(),
            **lease,
        }
