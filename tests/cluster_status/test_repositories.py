"""Repository sync from table rows: verdicts, leaders, failure modes (no database)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from relay.cluster_status.verdicts.repositories import (
    RepositoryState,
    ServiceState,
    compute_repository_sync,
    track_writing,
)
from relay.cluster_status.verdicts.repository_rows import (
    BindingRow,
    ClusterRows,
    DeviceRow,
    PropertyRow,
    PushEventRow,
    RepositoryRow,
    ServiceRow,
    VersionRow,
)

NOW = 1_700_000_000.0
THRESHOLD = 300.0


@dataclass
class Cluster:
    """Builds ClusterRows the way an operator sets a cluster up."""

    rows: dict[str, list[Any]] = field(
        default_factory=lambda: {
            "repositories": [],
            "versions": [],
            "push_events": [],
            "services": [],
            "bindings": [],
            "devices": [],
            "properties": [],
        }
    )

    def service(self, name: str = "repos001", *, type_: str = "cluster.repository") -> str:
        phid = f"PHID-ASRV-{name}"
        self.rows["services"].append(ServiceRow(phid, name, type_))
        return phid

    def device(self, service: str, name: str, *, disabled: bool = False) -> str:
        phid = f"PHID-DEVI-{name}"
        if not any(d.phid == phid for d in self.rows["devices"]):
            self.rows["devices"].append(DeviceRow(phid, name))
        self.rows["bindings"].append(BindingRow(service, phid, disabled))
        return phid

    def repo(
        self,
        service: str | None,
        name: str = "app",
        *,
        vcs: str = "git",
        callsign: str | None = None,
    ) -> str:
        phid = f"PHID-REPO-{name}"
        repo_id = len(self.rows["repositories"]) + 1
        self.rows["repositories"].append(RepositoryRow(repo_id, phid, name, callsign, vcs, service))
        return phid

    def version(self, repo: str, device: str, version: int, **kwargs: Any) -> None:
        kwargs.setdefault("is_writing", False)
        self.rows["versions"].append(VersionRow(repo, device, version, **kwargs))

    def push(self, repo: str, event_id: int, age: float) -> None:
        self.rows["push_events"].append(PushEventRow(event_id, repo, int(NOW - age)))

    def prop(self, phid: str, name: str, value: str) -> None:
        self.rows["properties"].append(PropertyRow(phid, name, value))

    def build(self) -> ClusterRows:
        return ClusterRows(**{k: tuple(v) for k, v in self.rows.items()})

    def compute(self, **kwargs: Any) -> tuple[ServiceState, ...]:
        kwargs.setdefault("now", NOW)
        kwargs.setdefault("write_interruption_seconds", THRESHOLD)
        return compute_repository_sync(self.build(), **kwargs).services


def only_repo(services: tuple[ServiceState, ...]) -> RepositoryState:
    (service,) = services
    (repo,) = service.repositories
    return repo


def two_device_cluster() -> tuple[Cluster, str, str, str, str]:
    cluster = Cluster()
    service = cluster.service()
    a = cluster.device(service, "repo001")
    b = cluster.device(service, "repo002")
    repo = cluster.repo(service, callsign="APP")
    return cluster, service, a, b, repo


def test_no_repositories() -> None:
    cluster = Cluster()
    service = cluster.service()
    cluster.device(service, "repo001")
    (state,) = cluster.compute()
    assert (state.verdict, state.lag, state.repositories) == ("No Repositories", None, ())
    assert state.active_devices == ("repo001",)
    assert not state.closed


def test_synchronized() -> None:
    cluster, _, a, b, repo = two_device_cluster()
    cluster.push(repo, 7, age=3600)
    cluster.version(repo, a, 7)
    cluster.version(repo, b, 7)
    (state,) = cluster.compute()
    assert (state.verdict, state.lag) == ("Synchronized", None)
    result = only_repo((state,))
    assert result.monogram == "rAPP"
    assert (result.sync, result.leader_version, result.leaders) == (
        "synchronized",
        7,
        ("repo001", "repo002"),
    )
    assert result.followers == ()
    assert result.failures == ()
    assert result.last_write == NOW - 3600


def test_partial_with_two_leaders_and_an_old_push() -> None:
    cluster, service, a, b, repo = two_device_cluster()
    c = cluster.device(service, "repo003")
    cluster.push(repo, 9, age=7200)
    cluster.version(repo, a, 9)
    cluster.version(repo, b, 9)
    cluster.version(repo, c, 5)
    (state,) = cluster.compute()
    assert state.verdict == "Partial"
    assert state.lag == 7200
    result = only_repo((state,))
    assert result.sync == "partial"
    assert [(f.device, f.version) for f in result.followers] == [("repo003", 5)]


def test_partial_with_one_leader_and_a_recent_push() -> None:
    cluster, _, a, b, repo = two_device_cluster()
    cluster.push(repo, 4, age=60)
    cluster.version(repo, a, 4)
    cluster.version(repo, b, 3)
    (state,) = cluster.compute()
    assert (state.verdict, state.lag) == ("Partial", 60)


def test_unsynchronized_with_one_leader_and_an_old_push() -> None:
    cluster, _, a, b, repo = two_device_cluster()
    cluster.push(repo, 4, age=301)
    cluster.version(repo, a, 4)
    cluster.version(repo, b, 3)
    (state,) = cluster.compute()
    assert (state.verdict, state.lag) == ("Unsynchronized", 301)
    assert state.messages == ("rAPP has changes only on repo001 for 5 min: data at risk",)


def test_unsynchronized_when_the_push_is_unknown() -> None:
    cluster, _, a, b, repo = two_device_cluster()
    cluster.version(repo, a, 4)  # no push event 4 (an observed repository, say)
    cluster.version(repo, b, 3)
    (state,) = cluster.compute()
    assert (state.verdict, state.lag) == ("Unsynchronized", None)
    assert state.messages == ("rAPP has changes only on repo001: data at risk",)


def test_a_device_with_no_version_row_is_a_follower() -> None:
    cluster, _, a, _b, repo = two_device_cluster()
    cluster.push(repo, 2, age=10)
    cluster.version(repo, a, 2)
    result = only_repo(cluster.compute())
    assert result.sync == "partial"
    assert [(f.device, f.version) for f in result.followers] == [("repo002", None)]


def test_push_event_of_another_repository_is_not_used() -> None:
    cluster, _, a, b, repo = two_device_cluster()
    cluster.push("PHID-REPO-other", 4, age=10)
    cluster.version(repo, a, 4)
    cluster.version(repo, b, 3)
    (state,) = cluster.compute()
    assert (state.verdict, state.lag) == ("Unsynchronized", None)


def test_ambiguous_leader_without_versions_on_active_devices() -> None:
    cluster, _, _a, _b, _repo = two_device_cluster()
    (state,) = cluster.compute()
    assert (state.verdict, state.lag) == ("Ambiguous Leader", None)
    result = only_repo((state,))
    assert (result.sync, result.leader_version, result.failures) == (
        "ambiguous",
        None,
        ("ambiguous-leader",),
    )
    assert state.messages == ("rAPP has an ambiguous leader: no active device has a version",)


def test_ambiguous_leader_wins_over_everything() -> None:
    cluster, service, a, b, repo = two_device_cluster()
    cluster.version(repo, a, 4)
    cluster.version(repo, b, 3)  # unsynchronized on its own
    cluster.repo(service, "second")  # ambiguous
    (state,) = cluster.compute()
    assert state.verdict == "Ambiguous Leader"


def test_unsynchronized_wins_over_partial_and_lag_is_the_longest() -> None:
    cluster, service, a, b, repo = two_device_cluster()
    cluster.push(repo, 4, age=900)
    cluster.version(repo, a, 4)
    cluster.version(repo, b, 3)
    other = cluster.repo(service, "other")
    cluster.push(other, 8, age=20)
    cluster.version(other, a, 8)
    cluster.version(other, b, 6)
    (state,) = cluster.compute()
    assert (state.verdict, state.lag) == ("Unsynchronized", 900)
    assert [r.sync for r in state.repositories] == ["unsynchronized", "partial"]


def test_loss_of_leaders_when_the_leader_binding_is_disabled() -> None:
    cluster = Cluster()
    service = cluster.service()
    a = cluster.device(service, "repo001", disabled=True)
    b = cluster.device(service, "repo002")
    repo = cluster.repo(service, callsign="APP")
    cluster.push(repo, 5, age=30)
    cluster.version(repo, a, 5)
    cluster.version(repo, b, 4)
    (state,) = cluster.compute()
    result = only_repo((state,))
    assert result.failures == ("loss-of-leaders",)
    # Phorge's console ignores inactive devices: the active one leads alone.
    assert (state.verdict, result.leader_version, result.leaders) == (
        "Synchronized",
        4,
        ("repo002",),
    )
    assert result.message is not None
    assert "lost its leaders" in result.message
    inactive = [d for d in result.devices if not d.active]
    assert [(d.device, d.version, d.leader) for d in inactive] == [("repo001", 5, False)]


def test_loss_of_leaders_and_ambiguity_when_no_active_device_has_a_version() -> None:
    cluster = Cluster()
    service = cluster.service()
    a = cluster.device(service, "repo001", disabled=True)
    cluster.device(service, "repo002")
    repo = cluster.repo(service)
    cluster.version(repo, a, 5)
    result = only_repo(cluster.compute())
    assert result.failures == ("ambiguous-leader", "loss-of-leaders")


def test_a_service_with_no_active_device_has_ambiguous_leaders() -> None:
    cluster = Cluster()
    service = cluster.service()
    a = cluster.device(service, "repo001", disabled=True)
    repo = cluster.repo(service)
    cluster.version(repo, a, 1)
    (state,) = cluster.compute()
    assert state.verdict == "Ambiguous Leader"
    assert state.active_devices == ()
    assert state.devices == ("repo001",)


def test_a_device_is_active_when_any_of_its_bindings_is_enabled() -> None:
    cluster, service, a, b, repo = two_device_cluster()
    cluster.device(service, "repo001", disabled=True)  # a second, disabled interface
    cluster.version(repo, a, 1)
    cluster.version(repo, b, 1)
    (state,) = cluster.compute()
    assert state.active_devices == ("repo001", "repo002")
    assert state.verdict == "Synchronized"


def test_write_interruption_past_the_threshold() -> None:
    cluster, _, a, b, repo = two_device_cluster()
    cluster.push(repo, 3, age=4000)
    cluster.version(repo, b, 3)
    properties = {"userPHID": "PHID-USER-alice", "epoch": int(NOW - 1000), "devicePHID": a}
    cluster.version(
        repo, a, 3, is_writing=True, write_properties=json.dumps(properties), lock_owner="123.abc"
    )
    result = only_repo(cluster.compute())
    assert result.failures == ("write-interruption",)
    lock = result.write_lock
    assert lock is not None
    assert (lock.device, lock.lock_owner, lock.writer, lock.since, lock.held_for) == (
        "repo001",
        "123.abc",
        "PHID-USER-alice",
        NOW - 1000,
        1000,
    )
    assert lock.interrupted
    writer = next(d for d in result.devices if d.device == "repo001")
    assert (writer.writing, writer.last_writer, writer.last_write_at) == (
        True,
        "PHID-USER-alice",
        NOW - 1000,
    )
    assert result.message is not None
    assert "write interrupted on repo001" in result.message


def test_a_fresh_write_is_not_an_interruption() -> None:
    cluster, _, a, b, repo = two_device_cluster()
    cluster.version(repo, b, 3)
    props = json.dumps({"epoch": int(NOW - 20)})
    cluster.version(repo, a, 3, is_writing=True, write_properties=props, lock_owner="9.x")
    result = only_repo(cluster.compute())
    assert result.failures == ()
    assert result.write_lock is not None
    assert not result.write_lock.interrupted


def test_write_start_falls_back_to_when_relay_first_saw_the_flag() -> None:
    cluster, _, a, b, repo = two_device_cluster()
    cluster.version(repo, b, 3)
    cluster.version(repo, a, 3, is_writing=True, write_properties="not json")
    seen: dict[tuple[str, str], float] = {}
    seen = track_writing(seen, cluster.build().versions, NOW - 400)
    assert seen == {(repo, a): NOW - 400}
    # A later poll keeps the first sighting.
    seen = track_writing(seen, cluster.build().versions, NOW)
    result = only_repo(cluster.compute(writing_first_seen=seen))
    assert result.write_lock is not None
    assert result.write_lock.since == NOW - 400
    assert result.failures == ("write-interruption",)
    # Without any sighting the start is unknown and nothing is claimed.
    unknown = only_repo(cluster.compute())
    assert unknown.write_lock is not None
    assert (unknown.write_lock.since, unknown.write_lock.interrupted) == (None, False)
    # Once the flag clears it is forgotten.
    cleared = [replace(v, is_writing=False) for v in cluster.build().versions]
    assert track_writing(seen, cleared, NOW) == {}


@pytest.mark.parametrize(
    ("value", "closed"),
    [
        ("true", True),
        ("false", False),
        ('"0"', False),
        ('"yes"', True),
        ("1", True),
        ("null", False),
        ("{bad", False),
    ],
)
def test_closed_service_property(value: str, closed: bool) -> None:
    cluster = Cluster()
    service = cluster.service()
    cluster.prop(service, "closed", value)
    cluster.prop("PHID-ASRV-elsewhere", "closed", "true")
    (state,) = cluster.compute()
    assert state.closed is closed


def test_only_git_repositories_and_repository_services_count() -> None:
    cluster, service, a, b, repo = two_device_cluster()
    cluster.version(repo, a, 1)
    cluster.version(repo, b, 1)
    cluster.repo(service, "hg-repo", vcs="hg")
    cluster.repo(None, "not-clustered")
    other = cluster.service("search", type_="cluster.search")
    cluster.repo(other, "misfiled")
    (state,) = cluster.compute()
    assert state.name == "repos001"
    assert [r.name for r in state.repositories] == ["app"]


def test_repository_without_callsign_gets_an_id_monogram() -> None:
    cluster = Cluster()
    service = cluster.service()
    cluster.device(service, "repo001")
    cluster.repo(service, "nocall")
    assert only_repo(cluster.compute()).monogram == "R1"


def test_unknown_device_names_fall_back_to_phids() -> None:
    cluster = Cluster()
    service = cluster.service()
    cluster.rows["bindings"].append(BindingRow(service, "PHID-DEVI-ghost", False))
    (state,) = cluster.compute()
    assert state.active_devices == ("PHID-DEVI-ghost",)


@pytest.mark.parametrize(
    ("age", "text"),
    [(300, "5 min"), (7199, "119 min"), (7200, "2 h"), (172_799, "47 h"), (200_000, "2 d")],
)
def test_the_data_at_risk_message_says_for_how_long(age: float, text: str) -> None:
    cluster, _, a, b, repo = two_device_cluster()
    cluster.push(repo, 4, age=age)
    cluster.version(repo, a, 4)
    cluster.version(repo, b, 3)
    (state,) = cluster.compute()
    assert state.messages == (f"rAPP has changes only on repo001 for {text}: data at risk",)
