"""Status as relay messages: JSON payloads, change detection, message wrapping.

Pure. Each kind of status (databases, repositories) becomes typed readings
(``relay.core.cluster_reading``, what the node's snapshot carries), one
JSON-able ``data`` payload made from them, and a *fingerprint*: the part of the state an operator
cares about (statuses, delay class, health, mode, sync verdicts, versions),
leaving out what moves on every poll (latency, exact delay, lag, times).
A ``Publisher`` turns a payload into a relay message only when its
fingerprint differs from the last one, so an unchanged poll sends nothing.
Fingerprints are compared by digest, a short text another node can be
handed: a node taking the checks over (broker mode) starts from the digest
the previous checker published, so an unchanged state is not announced again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from relay.cluster_status.verdicts.databases import HostState, ModeVerdict
from relay.cluster_status.verdicts.health import HEALTH_WINDOW
from relay.cluster_status.verdicts.replication import ReplicationVerdict, delay_bucket
from relay.cluster_status.verdicts.repositories import (
    DeviceVersion,
    RepositoryState,
    RepositorySyncState,
    ServiceState,
)
from relay.core.cluster_reading import (
    ConnectionReading,
    DatabaseReading,
    DeviceReading,
    HealthReading,
    ReplicationReading,
    RepositoriesReading,
    RepositoryReading,
    ServiceReading,
    WriteLockReading,
)
from relay.core.envelope import new_message, new_unique_id

__all__ = [
    "DATABASES_TYPE",
    "REPOSITORIES_TYPE",
    "Publisher",
    "database_fingerprint",
    "database_payload",
    "database_reading",
    "fingerprint_digest",
    "repositories_reading",
    "repository_fingerprint",
    "repository_payload",
]

#: The ``type`` of database status messages.
DATABASES_TYPE = "relay.cluster.databases"
#: The ``type`` of repository status messages.
REPOSITORIES_TYPE = "relay.cluster.repositories"


class Publisher:
    """Decides when one status key has news, and wraps it as a message.

    ``offer`` returns a new message the first time and whenever the
    fingerprint changed, None otherwise. The latest message itself is kept
    by the hub, which hands it to each browser that subscribes.
    """

    def __init__(self, key: str, type_: str, unique_id: Callable[[], str] = new_unique_id) -> None:
        """Publish on ``key`` with message type ``type_``."""
        self.key = key
        self.type = type_
        self._unique_id = unique_id
        #: The digest of the last fingerprint offered (or seeded); None before any.
        self.digest: str | None = None

    def seed(self, digest: str) -> None:
        """Start as if a message with this fingerprint digest had been sent already."""
        self.digest = digest

    def offer(self, data: dict[str, Any], fingerprint: Hashable) -> dict[str, Any] | None:
        """Return a message for ``data`` if its fingerprint is new, else None."""
        digest = fingerprint_digest(fingerprint)
        if digest == self.digest:
            return None
        self.digest = digest
        return new_message(self.key, self.type, data, unique_id=self._unique_id())


def fingerprint_digest(fingerprint: Hashable) -> str:
    """A fingerprint as a short stable text (fingerprints are tuples of plain values)."""
    return hashlib.sha256(repr(fingerprint).encode()).hexdigest()[:32]


# -- databases ----------------------------------------------------------------


def database_payload(
    hosts: Sequence[HostState],
    mode: ModeVerdict,
    *,
    instance: str,
    observer: str,
    updated: float,
) -> dict[str, Any]:
    """The ``data`` of a database status message: every host and the mode."""
    return {
        "kind": "databases",
        "instance": instance,
        "observer": observer,
        "updated": updated,
        "mode": mode.mode,
        "modeReason": mode.reason,
        "databases": [database_reading(h).as_dict() for h in hosts],
    }


def database_reading(host: HostState) -> DatabaseReading:
    """What is known about one database host, as the node's snapshot carries it."""
    connection = None
    if host.connection is not None:
        connection = ConnectionReading(
            host.connection.status,
            host.connection.message,
            None if host.latency is None else round(host.latency * 1000, 1),
        )
    replication = None
    if host.replication is not None:
        replication = ReplicationReading(
            host.replication.status,
            host.replication.delay,
            host.replication.message,
            host.replication.master_host,
        )
    return DatabaseReading(
        ref=host.label,
        host=host.host,
        port=host.port,
        role=host.role,
        disabled=host.disabled,
        partition=host.partition,
        connection=connection,
        replication=replication,
        health=HealthReading(
            healthy=host.healthy,
            up=host.up,
            down=host.down,
            window=HEALTH_WINDOW,
            checked_at=host.checked_at,
            changed_at=host.health_changed_at,
        ),
    )


def database_fingerprint(hosts: Sequence[HostState], mode: ModeVerdict) -> Hashable:
    """What must change for a new database message to be sent.

    The messages count too: they say why (which thread stopped, the
    replica's last error, why the connection failed), and a status can stay
    the same while its cause changes.
    """
    return (
        mode.mode,
        tuple(
            (
                h.label,
                h.role,
                h.disabled,
                h.connection.status if h.connection else None,
                h.connection.message if h.connection else None,
                h.replication.status if h.replication else None,
                _replication_cause(h.replication),
                delay_bucket(h.replication.delay) if h.replication else None,
                h.healthy,
            )
            for h in hosts
        ),
    )


def _replication_cause(replication: ReplicationVerdict | None) -> str | None:
    """The replication message, where it does not move with every poll."""
    if replication is None or replication.status == "replica-slow":
        # It states the exact delay; the delay class stands for it.
        return None
    return replication.message


# -- repositories -------------------------------------------------------------


def repository_payload(
    state: RepositorySyncState | None,
    *,
    source: str | None,
    error: str | None,
    instance: str,
    observer: str,
    updated: float,
) -> dict[str, Any]:
    """The ``data`` of a repository status message (see ``repositories_reading``)."""
    return repositories_reading(
        state, source=source, error=error, instance=instance, observer=observer, updated=updated
    ).as_dict()


def repositories_reading(
    state: RepositorySyncState | None,
    *,
    source: str | None,
    error: str | None,
    instance: str,
    observer: str,
    updated: float,
) -> RepositoriesReading:
    """Every repository service, as the node's snapshot carries it.

    ``state`` is None when the tables could not be read; ``error`` then says
    why. ``source`` names the database the tables were read from.
    """
    return RepositoriesReading(
        instance=instance,
        observer=observer,
        updated=updated,
        source=source,
        error=error,
        available=state is not None,
        services=() if state is None else tuple(_service_reading(s) for s in state.services),
    )


def _service_reading(service: ServiceState) -> ServiceReading:
    return ServiceReading(
        phid=service.phid,
        name=service.name,
        closed=service.closed,
        active_devices=service.active_devices,
        devices=service.devices,
        verdict=service.verdict,
        lag=_seconds(service.lag),
        messages=service.messages,
        repositories=tuple(_repository_reading(r) for r in service.repositories),
    )


def _repository_reading(repo: RepositoryState) -> RepositoryReading:
    lock = repo.write_lock
    return RepositoryReading(
        phid=repo.phid,
        name=repo.name,
        monogram=repo.monogram,
        sync=repo.sync,
        leader_version=repo.leader_version,
        leaders=repo.leaders,
        followers=tuple((f.device, f.version) for f in repo.followers),
        devices=tuple(_device_reading(d) for d in repo.devices),
        last_write=repo.last_write,
        lag=_seconds(repo.lag),
        failures=repo.failures,
        write_lock=None
        if lock is None
        else WriteLockReading(
            device=lock.device,
            lock_owner=lock.lock_owner,
            writer=lock.writer,
            since=lock.since,
            held_for=_seconds(lock.held_for),
            interrupted=lock.interrupted,
        ),
        message=repo.message,
    )


def _device_reading(device: DeviceVersion) -> DeviceReading:
    return DeviceReading(
        device=device.device,
        device_phid=device.device_phid,
        version=device.version,
        active=device.active,
        leader=device.leader,
        writing=device.writing,
        lock_owner=device.lock_owner,
        last_writer=device.last_writer,
        last_write_at=device.last_write_at,
    )


def repository_fingerprint(state: RepositorySyncState | None, error: str | None) -> Hashable:
    """What must change for a new repository message to be sent.

    Lag and how long a lock has been held grow every second and are left
    out; crossing a threshold shows up as a new verdict or failure mode.
    """
    if state is None:
        return ("unavailable", error)
    return tuple(
        (
            s.phid,
            s.name,
            s.closed,
            s.active_devices,
            s.devices,
            s.verdict,
            tuple(
                (
                    r.phid,
                    r.name,
                    r.sync,
                    r.leader_version,
                    r.leaders,
                    tuple((f.device, f.version) for f in r.followers),
                    r.failures,
                    None
                    if r.write_lock is None
                    else (r.write_lock.device, r.write_lock.lock_owner, r.write_lock.since),
                )
                for r in s.repositories
            ),
        )
        for s in state.services
    )


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
