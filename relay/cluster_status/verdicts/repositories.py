"""Repository sync across a Phorge cluster, from the rows of Phorge's tables.

Pure. The driver reads the repository and Almanac rows (``repository_rows``);
this module turns them into, per repository service, the sync verdict
Phorge's "Repository Servers" console shows (first match wins: Ambiguous
Leader, Unsynchronized, Partial, Synchronized, No Repositories) with its
lag, and per repository the leader version, leaders, followers, write lock
and failure modes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from relay.cluster_status.verdicts.php_values import (
    decode_json,
    json_number,
    json_object,
    nonempty_text,
    php_truthy,
)
from relay.cluster_status.verdicts.repository_rows import (
    CLUSTER_SERVICE_TYPE,
    ClusterRows,
    PropertyRow,
    RepositoryRow,
    ServiceRow,
    VersionRow,
)

__all__ = [
    "RECENT_WRITE_SECONDS",
    "DeviceVersion",
    "FailureMode",
    "RepositoryState",
    "RepositorySync",
    "RepositorySyncState",
    "ServiceState",
    "SyncVerdict",
    "WriteLock",
    "WritingKey",
    "compute_repository_sync",
    "track_writing",
]

#: A write younger than this is "not expected to have propagated yet".
RECENT_WRITE_SECONDS = 5 * 60

SyncVerdict = Literal[
    "Ambiguous Leader", "Unsynchronized", "Partial", "Synchronized", "No Repositories"
]
RepositorySync = Literal["ambiguous", "unsynchronized", "partial", "synchronized"]
FailureMode = Literal["ambiguous-leader", "loss-of-leaders", "write-interruption"]


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
    age = f" for {_at_least_minutes(lag)}" if lag is not None else ""
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
        props = json_object(row.write_properties) if row else {}
        result.append(
            DeviceVersion(
                device_phid=device_phid,
                device=ctx.device_names.get(device_phid, device_phid),
                version=row.version if row else None,
                active=active,
                leader=active and row is not None and row.version == leader,
                writing=bool(row and row.is_writing),
                lock_owner=row.lock_owner if row else None,
                last_writer=nonempty_text(props.get("userPHID")),
                last_write_at=json_number(props.get("epoch")),
            )
        )
    return tuple(sorted(result, key=lambda d: (not d.active, d.device)))


def _write_lock(versions: list[VersionRow], ctx: _Context) -> WriteLock | None:
    """The device holding the write flag, if any (the first by name)."""
    writing = [v for v in versions if v.is_writing]
    if not writing:
        return None
    row = min(writing, key=lambda v: ctx.device_names.get(v.device_phid, v.device_phid))
    props = json_object(row.write_properties)
    since = json_number(props.get("epoch"))
    if since is None:
        since = ctx.first_seen.get((row.repository_phid, row.device_phid))
    held_for = ctx.now - since if since is not None else None
    return WriteLock(
        device_phid=row.device_phid,
        device=ctx.device_names.get(row.device_phid, row.device_phid),
        lock_owner=row.lock_owner,
        writer=nonempty_text(props.get("userPHID")),
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
            return php_truthy(decode_json(prop.value))
    return False


def _names(phids: Iterable[str], names: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(sorted(names.get(p, p) for p in phids))


def _join(first: str | None, second: str) -> str:
    return second if first is None else f"{first}; {second}"


def _at_least_minutes(seconds: float) -> str:
    """How long changes have waited, for a message: ``12 min``, ``3 h``, ``2 d``.

    Only an unsynchronized repository's message says it, and its lag is at
    least ``RECENT_WRITE_SECONDS``, so minutes are the smallest unit needed.
    (The CLI's tables write durations their own way, ``relay.cli.wording``.)
    """
    minutes = int(seconds) // 60
    if minutes < 120:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // 1440} d"
