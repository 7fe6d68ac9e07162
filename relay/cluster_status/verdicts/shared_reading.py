"""The checking node's verdicts read back as a reading, on a node that did not check itself.

Pure. In broker mode one node checks for the cluster and every node serves
what it published: the ``data`` of its last database and repository
messages (``ClusterStatusReading.as_dict`` and ``RepositoriesReading.as_dict``
made them) become the typed readings of this node's snapshot again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relay.core.cluster_reading import (
    ClusterStatusReading,
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

__all__ = ["reading_from_data"]


def reading_from_data(
    databases: Mapping[str, Any] | None,
    repositories: Mapping[str, Any] | None,
    *,
    instance: str,
    keys: tuple[str, str],
) -> ClusterStatusReading:
    """The reading for the last messages' ``data`` (None: none heard yet).

    ``instance`` is where the messages go, ``keys`` the database and
    repository keys they are announced on.

    Raises:
        ValueError: the data is not what a checking node publishes.
    """
    try:
        return ClusterStatusReading(
            instance=instance,
            observer=str((databases or {}).get("observer") or ""),
            databases_key=keys[0],
            repositories_key=keys[1],
            # Nothing heard yet: read-write until a checker says otherwise,
            # as a node that checks itself reports before its first round.
            mode=str((databases or {}).get("mode") or "read-write"),
            mode_reason=(databases or {}).get("modeReason"),
            databases=tuple(_database(d) for d in (databases or {}).get("databases", [])),
            repositories=None if repositories is None else _repositories(repositories),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"a cluster-status verdict of an unexpected shape: {exc!r}") from None


def _database(data: Mapping[str, Any]) -> DatabaseReading:
    connection, replication, health = data["connection"], data["replication"], data["health"]
    return DatabaseReading(
        ref=data["ref"],
        host=data["host"],
        port=data["port"],
        role=data["role"],
        disabled=data["disabled"],
        partition=None if data["partition"] is None else tuple(data["partition"]),
        connection=None
        if connection is None
        else ConnectionReading(
            connection["status"], connection["message"], connection["latencyMs"]
        ),
        replication=None
        if replication is None
        else ReplicationReading(
            replication["status"],
            replication["delay"],
            replication["message"],
            replication["masterHost"],
        ),
        health=HealthReading(
            healthy=health["healthy"],
            up=health["up"],
            down=health["down"],
            window=health["window"],
            checked_at=health["checkedAt"],
            changed_at=health["changedAt"],
        ),
    )


def _repositories(data: Mapping[str, Any]) -> RepositoriesReading:
    return RepositoriesReading(
        instance=data["instance"],
        observer=data["observer"],
        updated=data["updated"],
        source=data["source"],
        error=data["error"],
        available=data["available"],
        services=tuple(_service(s) for s in data["services"]),
    )


def _service(data: Mapping[str, Any]) -> ServiceReading:
    return ServiceReading(
        phid=data["phid"],
        name=data["name"],
        closed=data["closed"],
        active_devices=tuple(data["activeDevices"]),
        devices=tuple(data["devices"]),
        verdict=data["verdict"],
        lag=data["lag"],
        messages=tuple(data["messages"]),
        repositories=tuple(_repository(r) for r in data["repositories"]),
    )


def _repository(data: Mapping[str, Any]) -> RepositoryReading:
    lock = data["writeLock"]
    return RepositoryReading(
        phid=data["phid"],
        name=data["name"],
        monogram=data["monogram"],
        sync=data["sync"],
        leader_version=data["leaderVersion"],
        leaders=tuple(data["leaders"]),
        followers=tuple((f["device"], f["version"]) for f in data["followers"]),
        devices=tuple(_device(d) for d in data["devices"]),
        last_write=data["lastWrite"],
        lag=data["lag"],
        failures=tuple(data["failures"]),
        write_lock=None
        if lock is None
        else WriteLockReading(
            device=lock["device"],
            lock_owner=lock["lockOwner"],
            writer=lock["writer"],
            since=lock["since"],
            held_for=lock["heldFor"],
            interrupted=lock["interrupted"],
        ),
        message=data["message"],
    )


def _device(data: Mapping[str, Any]) -> DeviceReading:
    return DeviceReading(
        device=data["device"],
        device_phid=data["devicePHID"],
        version=data["version"],
        active=data["active"],
        leader=data["leader"],
        writing=data["writing"],
        lock_owner=data["lockOwner"],
        last_writer=data["lastWriter"],
        last_write_at=data["lastWriteAt"],
    )
