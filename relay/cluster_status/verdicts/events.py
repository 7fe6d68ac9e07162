"""Status as relay messages: JSON payloads, change detection, message wrapping.

Pure. Each kind of status (databases, repositories) becomes one JSON-able
``data`` payload and a *fingerprint*: the part of the state an operator
cares about (statuses, delay class, health, mode, sync verdicts, versions),
leaving out what moves on every poll (latency, exact delay, lag, times).
A ``Publisher`` turns a payload into a relay message only when its
fingerprint differs from the last one, so an unchanged poll sends nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from relay.cluster_status.verdicts.databases import HostState, ModeVerdict
from relay.cluster_status.verdicts.health import HEALTH_WINDOW
from relay.cluster_status.verdicts.replication import delay_bucket
from relay.cluster_status.verdicts.repositories import (
    DeviceVersion,
    RepositoryState,
    RepositorySyncState,
    ServiceState,
)
from relay.core.envelope import new_message, new_unique_id

__all__ = [
    "DATABASES_TYPE",
    "REPOSITORIES_TYPE",
    "Publisher",
    "database_fingerprint",
    "database_payload",
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
        self._offered = False
        self._fingerprint: Hashable | None = None

    def offer(self, data: dict[str, Any], fingerprint: Hashable) -> dict[str, Any] | None:
        """Return a message for ``data`` if its fingerprint is new, else None."""
        if self._offered and fingerprint == self._fingerprint:
            return None
        self._offered = True
        self._fingerprint = fingerprint
        return new_message(self.key, self.type, data, unique_id=self._unique_id())


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
        "databases": [_host_payload(h) for h in hosts],
    }


def _host_payload(host: HostState) -> dict[str, Any]:
    connection = None
    if host.connection is not None:
        connection = {
            "status": host.connection.status,
            "message": host.connection.message,
            "latencyMs": None if host.latency is None else round(host.latency * 1000, 1),
        }
    replication = None
    if host.replication is not None:
        replication = {
            "status": host.replication.status,
            "delay": host.replication.delay,
            "message": host.replication.message,
            "masterHost": host.replication.master_host,
        }
    return {
        "ref": host.label,
        "host": host.host,
        "port": host.port,
        "role": host.role,
        "disabled": host.disabled,
        "partition": list(host.partition) if host.partition is not None else None,
        "connection": connection,
        "replication": replication,
        "health": {
            "healthy": host.healthy,
            "up": host.up,
            "down": host.down,
            "window": HEALTH_WINDOW,
            "checkedAt": host.checked_at,
            "changedAt": host.health_changed_at,
        },
    }


def database_fingerprint(hosts: Sequence[HostState], mode: ModeVerdict) -> Hashable:
    """What must change for a new database message to be sent."""
    return (
        mode.mode,
        tuple(
            (
                h.label,
                h.role,
                h.disabled,
                h.connection.status if h.connection else None,
                h.replication.status if h.replication else None,
                delay_bucket(h.replication.delay) if h.replication else None,
                h.healthy,
            )
            for h in hosts
        ),
    )


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
    """The ``data`` of a repository status message.

    ``state`` is None when the tables could not be read; ``error`` then says
    why. ``source`` names the database the tables were read from.
    """
    return {
        "kind": "repositories",
        "instance": instance,
        "observer": observer,
        "updated": updated,
        "source": source,
        "available": state is not None,
        "error": error,
        "services": [] if state is None else [_service_payload(s) for s in state.services],
    }


def _service_payload(service: ServiceState) -> dict[str, Any]:
    return {
        "phid": service.phid,
        "name": service.name,
        "closed": service.closed,
        "activeDevices": list(service.active_devices),
        "devices": list(service.devices),
        "verdict": service.verdict,
        "lag": _seconds(service.lag),
        "messages": list(service.messages),
        "repositories": [_repository_payload(r) for r in service.repositories],
    }


def _repository_payload(repo: RepositoryState) -> dict[str, Any]:
    lock = repo.write_lock
    return {
        "phid": repo.phid,
        "name": repo.name,
        "monogram": repo.monogram,
        "sync": repo.sync,
        "leaderVersion": repo.leader_version,
        "leaders": list(repo.leaders),
        "followers": [{"device": f.device, "version": f.version} for f in repo.followers],
        "devices": [_device_payload(d) for d in repo.devices],
        "lastWrite": repo.last_write,
        "lag": _seconds(repo.lag),
        "failures": list(repo.failures),
        "writeLock": None
        if lock is None
        else {
            "device": lock.device,
            "lockOwner": lock.lock_owner,
            "writer": lock.writer,
            "since": lock.since,
            "heldFor": _seconds(lock.held_for),
            "interrupted": lock.interrupted,
        },
        "message": repo.message,
    }


def _device_payload(device: DeviceVersion) -> dict[str, Any]:
    return {
        "device": device.device,
        "devicePHID": device.device_phid,
        "version": device.version,
        "active": device.active,
        "leader": device.leader,
        "writing": device.writing,
        "lockOwner": device.lock_owner,
        "lastWriter": device.last_writer,
        "lastWriteAt": device.last_write_at,
    }


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
