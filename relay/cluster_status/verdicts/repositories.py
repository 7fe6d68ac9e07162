"""Repository sync across a Phorge cluster, from the rows of Phorge's tables.

Pure. The driver reads the repository and Almanac rows; this module turns
them into, per repository service, the sync verdict Phorge's "Repository
Servers" console shows (first match wins: Ambiguous Leader, Unsynchronized,
Partial, Synchronized, No Repositories) with its lag, and per repository
the leader version, leaders, followers, write lock and failure modes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CLUSTER_SERVICE_TYPE",
    "RECENT_WRITE_SECONDS",
    "BindingRow",
    "ClusterRows",
    "DeviceRow",
    "DeviceVersion",
    "FailureMode",
    "PropertyRow",
    "PushEventRow",
    "RepositoryRow",
    "RepositoryState",
    "RepositorySync",
    "RepositorySyncState",
    "ServiceState",
    "SyncVerdict",
    "VersionRow",
    "WriteLock",
    "WritingKey",
    "compute_repository_sync",
    "format_duration",
    "track_writing",
]

#: Almanac's service type for repository clusters.
CLUSTER_SERVICE_TYPE = "cluster.repository"
#: A write younger than this is "not expected to have propagated yet".
RECENT_WRITE_SECONDS = 5 * 60

SyncVerdict = Literal[
    "Ambiguous Leader", "Unsynchronized", "Partial", "Synchronized", "No Repositories"
]
RepositorySync = Literal["ambiguous", "unsynchronized", "partial", "synchronized"]
FailureMode = Literal["ambiguous-leader", "loss-of-leaders", "write-interruption"]


# -- input: one dataclass per table, holding only the columns used ---------


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


# -- output -----------------------------------------------------------------


@dataclass(frozen=True)
class DeviceVersion:
    """One device's working copy of one repository.

    ``version`` is None when the device has no version row yet. The
    ``last_writer``/``last_write_at`` come from ``writeProperties`` (who
    started the most recent write on this device, and when).
    """

    device_phid: str
    device: str
    version: int | None
    active: bool
    leader: bool
    writing: bool = False
    lock_owner: str | None = None
    last_writer: str | None = None
    last_write_at: float | None = None


@dataclass(frozen=True)
class WriteLock:
    """A device holding the durable write lock (``isWriting`` set).

    ``since`` is when the write started (from ``writeProperties``, or when
    relay first saw the flag if that is missing); ``interrupted`` is True
    once it has been held longer than the configured threshold.
    """

    device_phid: str
    device: str
    lock_owner: str | None
    writer: str | None
    since: float | None
    held_for: float | None
    interrupted: bool


@dataclass(frozen=True)
class RepositoryState:
    """The sync state of one clustered repository."""

    phid: str
    name: str
    monogram: str
    sync: RepositorySync
    leader_version: int | None
    leaders: tuple[str, ...]
    followers: tuple[DeviceVersion, ...]
    devices: tuple[DeviceVersion, ...]
    last_write: float | None
    lag: float | None
    failures: tuple[FailureMode, ...]
    write_lock: WriteLock | None
    message: str | None


@dataclass(frozen=True)
class ServiceState:
    """The sync state of one repository service, with its repositories."""

    phid: str
    name: str
    closed: bool
    active_devices: tuple[str, ...]
    devices: tuple[str, ...]
    verdict: SyncVerdict
    lag: float | None
    repositories: tuple[RepositoryState, ...]
    messages: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class RepositorySyncState:
    """Every repository service of the cluster."""

    services: tuple[ServiceState, ...]


WritingKey = tuple[str, str]


def track_writing(
    previous: Mapping[WritingKey, float], versions: Iterable[VersionRow], now: float
) -> dict[WritingKey, float]:
    """Remember when each (repository, device) write flag was first seen set.

    Used as the start of a write when ``writeProperties`` does not say.
    Takes the previous map, this poll's version rows and the current time;
    returns the new map (flags no longer set are forgotten).
    """
    return {
        (row.repository_phid, row.device_phid): previous.get(
            (row.repository_phid, row.device_phid), now
        )
        for row in versions
        if row.is_writing
    }


def compute_repository_sync(
    rows: ClusterRows,
    *,
    now: float,
    write_interruption_seconds: float,
    writing_first_seen: Mapping[WritingKey, float] | None = None,
) -> RepositorySyncState:
    """Compute every service's verdict and every repository's state.

    ``now`` is wall-clock unix seconds (push epochs are in those units).
    Only services of type ``cluster.repository`` and git repositories are
    considered, as in Phorge.
    """
    first_seen = writing_first_seen or {}
    device_names = {d.phid: d.name for d in rows.devices}
    push_epochs = {(e.id, e.repository_phid): e.epoch for e in rows.push_events}
    versions_by_repo: dict[str, list[VersionRow]] = defaultdict(list)
    for version in rows.versions:
        versions_by_repo[version.repository_phid].append(version)
    repos_by_service: dict[str, list[RepositoryRow]] = defaultdict(list)
    for repo in rows.repositories:
        if repo.vcs == "git" and repo.service_phid:
            repos_by_service[repo.service_phid].append(repo)

    services = []
    for service in sorted(rows.services, key=lambda s: (s.name, s.phid)):
        if service.service_type != CLUSTER_SERVICE_TYPE:
            continue
        bindings = [b for b in rows.bindings if b.service_phid == service.phid]
        # A device is active when any of its bindings (one per interface)
        # is enabled.
        context = _Context(
            now=now,
            threshold=write_interruption_seconds,
            active={b.device_phid for b in bindings if not b.disabled},
            device_names=device_names,
            push_epochs=push_epochs,
            first_seen=first_seen,
        )
        repositories = tuple(
            _repository_state(repo, versions_by_repo.get(repo.phid, []), context)
            for repo in sorted(repos_by_service.get(service.phid, []), key=lambda r: r.name)
        )
        all_devices = {b.device_phid for b in bindings}
        closed = _is_closed(service.phid, rows.properties)
        services.append(_service_state(service, closed, all_devices, repositories, context))
    return RepositorySyncState(tuple(services))


def _service_state(
    service: ServiceRow,
    closed: bool,
    all_devices: set[str],
    repositories: tuple[RepositoryState, ...],
    ctx: _Context,
) -> ServiceState:
    """One service as the console shows it: its devices, verdict and repositories."""
    verdict, lag = _service_verdict(repositories)
    return ServiceState(
        phid=service.phid,
        name=service.name,
        closed=closed,
        active_devices=_names(ctx.active, ctx.device_names),
        devices=_names(all_devices, ctx.device_names),
        verdict=verdict,
        lag=lag,
        repositories=repositories,
        messages=tuple(r.message for r in repositories if r.message),
    )


@dataclass(frozen=True)
class _Context:
    """What every repository of one service is judged against."""

    now: float
    threshold: float
    active: set[str]
    device_names: Mapping[str, str]
    push_epochs: Mapping[tuple[int, str], int]
    first_seen: Mapping[WritingKey, float]


def _repository_state(
    repo: RepositoryRow, versions: list[VersionRow], ctx: _Context
) -> RepositoryState:
    monogram = f"r{repo.callsign}" if repo.callsign else f"R{repo.id}"
    by_device = {v.device_phid: v for v in versions}
    active_versions = [by_device[d].version for d in ctx.active if d in by_device]
    leader = max(active_versions) if active_versions else None

    devices = _device_versions(by_device, leader, ctx)
    leaders = tuple(d.device for d in devices if d.leader)
    followers = tuple(d for d in devices if d.active and not d.leader)
    write_lock = _write_lock(versions, ctx)

    failures = _failures(leader, versions, write_lock)
    epoch = ctx.push_epochs.get((leader, repo.phid)) if leader is not None else None
    last_write = float(epoch) if epoch is not None else None
    sync, lag, message = _sync(monogram, leader, leaders, last_write, ctx)
    if "loss-of-leaders" in failures:
        message = _join(
            message,
            f"{monogram} lost its leaders: the newest version is only on "
            "inactive devices; reads and writes are frozen",
        )
    if write_lock is not None and write_lock.interrupted:
        message = _join(
            message,
            f"{monogram} write interrupted on {write_lock.device}: "
            "writes are frozen until an operator resolves it",
        )
    return RepositoryState(
        phid=repo.phid,
        name=repo.name,
        monogram=monogram,
        sync=sync,
        leader_version=leader,
        leaders=leaders,
        followers=followers,
        devices=devices,
        last_write=last_write,
        lag=lag,
        failures=tuple(failures),
        write_lock=write_lock,
        message=message,
    )


def _failures(
    leader: int | None, versions: list[VersionRow], write_lock: WriteLock | None
) -> list[FailureMode]:
    """The failure modes of Phorge's console that one repository is in."""
    failures: list[FailureMode] = []
    if leader is None:
        failures.append("ambiguous-leader")
    highest_anywhere = max((v.version for v in versions), default=None)
    if highest_anywhere is not None and (leader is None or highest_anywhere > leader):
        failures.append("loss-of-leaders")
    if write_lock is not None and write_lock.interrupted:
        failures.append("write-interruption")
    return failures


def _sync(
    monogram: str,
    leader: int | None,
    leaders: tuple[str, ...],
    last_write: float | None,
    ctx: _Context,
) -> tuple[RepositorySync, float | None, str | None]:
    """How far the active devices agree: the sync state, the lag and what to tell."""
    if leader is None:
        return (
            "ambiguous",
            None,
            (f"{monogram} has an ambiguous leader: no active device has a version"),
        )
    if len(leaders) == len(ctx.active):
        return "synchronized", None, None
    lag = ctx.now - last_write if last_write is not None else None
    recent = lag is not None and lag < RECENT_WRITE_SECONDS
    if len(leaders) >= 2 or recent:
        return "partial", lag, None
    age = f" for {format_duration(lag)}" if lag is not None else ""
    return (
        "unsynchronized",
        lag,
        (f"{monogram} has changes only on {', '.join(leaders)}{age}: data at risk"),
    )


def _device_versions(
    by_device: Mapping[str, VersionRow], leader: int | None, ctx: _Context
) -> tuple[DeviceVersion, ...]:
    """Every active device, plus inactive ones that still hold a version."""
    result = []
    for device_phid in ctx.active | set(by_device):
        row = by_device.get(device_phid)
        active = device_phid in ctx.active
        props = _write_properties(row.write_properties) if row else {}
        result.append(
            DeviceVersion(
                device_phid=device_phid,
                device=ctx.device_names.get(device_phid, device_phid),
                version=row.version if row else None,
                active=active,
                leader=active and row is not None and row.version == leader,
                writing=bool(row and row.is_writing),
                lock_owner=row.lock_owner if row else None,
                last_writer=_text(props.get("userPHID")),
                last_write_at=_number(props.get("epoch")),
            )
        )
    return tuple(sorted(result, key=lambda d: (not d.active, d.device)))


def _write_lock(versions: list[VersionRow], ctx: _Context) -> WriteLock | None:
    """The device holding the write flag, if any (the first by name)."""
    writing = [v for v in versions if v.is_writing]
    if not writing:
        return None
    row = min(writing, key=lambda v: ctx.device_names.get(v.device_phid, v.device_phid))
    props = _write_properties(row.write_properties)
    since = _number(props.get("epoch"))
    if since is None:
        since = ctx.first_seen.get((row.repository_phid, row.device_phid))
    held_for = ctx.now - since if since is not None else None
    return WriteLock(
        device_phid=row.device_phid,
        device=ctx.device_names.get(row.device_phid, row.device_phid),
        lock_owner=row.lock_owner,
        writer=_text(props.get("userPHID")),
        since=since,
        held_for=held_for,
        interrupted=held_for is not None and held_for > ctx.threshold,
    )


def _service_verdict(repositories: tuple[RepositoryState, ...]) -> tuple[SyncVerdict, float | None]:
    """First match wins, in the order of Phorge's console."""
    kinds = {r.sync for r in repositories}
    lags = [r.lag for r in repositories if r.lag is not None]
    lag = max(lags) if lags else None
    if "ambiguous" in kinds:
        return "Ambiguous Leader", None
    if "unsynchronized" in kinds:
        return "Unsynchronized", lag
    if "partial" in kinds:
        return "Partial", lag
    if "synchronized" in kinds:
        return "Synchronized", None
    return "No Repositories", None


def _is_closed(service_phid: str, properties: Iterable[PropertyRow]) -> bool:
    """Whether the service's ``closed`` property holds a true value."""
    for prop in properties:
        if prop.object_phid == service_phid and prop.name == "closed":
            return _php_truthy(_json(prop.value))
    return False


def _php_truthy(value: Any) -> bool:
    """Truthiness as Phorge (PHP) sees a decoded JSON value: "0" is false."""
    if isinstance(value, str):
        return value not in ("", "0")
    return bool(value)


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _write_properties(text: str | None) -> dict[str, Any]:
    value = _json(text)
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _names(phids: Iterable[str], names: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(sorted(names.get(p, p) for p in phids))


def _join(first: str | None, second: str) -> str:
    return second if first is None else f"{first}; {second}"


def format_duration(seconds: float) -> str:
    """A short human duration for messages and tables: 45 s, 12 min, 3 h, 2 d."""
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 2 * 3600:
        return f"{s // 60} min"
    if s < 2 * 86400:
        return f"{s // 3600} h"
    return f"{s // 86400} d"
