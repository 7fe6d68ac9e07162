"""The rows of Phorge's repository and Almanac tables that one poll reads.

Pure: one frozen dataclass per table, holding only the columns relay uses.
The driver fills them in; ``relay.cluster_status.verdicts.repositories``
judges them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CLUSTER_SERVICE_TYPE",
    "BindingRow",
    "ClusterRows",
    "DeviceRow",
    "PropertyRow",
    "PushEventRow",
    "RepositoryRow",
    "ServiceRow",
    "VersionRow",
]

#: Almanac's service type for repository clusters.
CLUSTER_SERVICE_TYPE = "cluster.repository"


@dataclass(frozen=True)
class RepositoryRow:
    """``<ns>_repository.repository``."""

    id: int
    phid: str
    name: str
    callsign: str | None
    vcs: str
    service_phid: str | None


@dataclass(frozen=True)
class VersionRow:
    """``<ns>_repository.repository_workingcopyversion``."""

    repository_phid: str
    device_phid: str
    version: int
    is_writing: bool
    write_properties: str | None = None
    lock_owner: str | None = None


@dataclass(frozen=True)
class PushEventRow:
    """``<ns>_repository.repository_pushevent``."""

    id: int
    repository_phid: str
    epoch: int


@dataclass(frozen=True)
class ServiceRow:
    """``<ns>_almanac.almanac_service``."""

    phid: str
    name: str
    service_type: str


@dataclass(frozen=True)
class BindingRow:
    """``<ns>_almanac.almanac_binding``."""

    service_phid: str
    device_phid: str
    disabled: bool


@dataclass(frozen=True)
class DeviceRow:
    """``<ns>_almanac.almanac_device``."""

    phid: str
    name: str


@dataclass(frozen=True)
class PropertyRow:
    """``<ns>_almanac.almanac_property``; ``value`` is JSON text."""

    object_phid: str
    name: str
    value: str | None


@dataclass(frozen=True)
class ClusterRows:
    """All the rows one poll read."""

    repositories: tuple[RepositoryRow, ...] = ()
    versions: tuple[VersionRow, ...] = ()
    push_events: tuple[PushEventRow, ...] = ()
    services: tuple[ServiceRow, ...] = ()
    bindings: tuple[BindingRow, ...] = ()
    devices: tuple[DeviceRow, ...] = ()
    properties: tuple[PropertyRow, ...] = ()
