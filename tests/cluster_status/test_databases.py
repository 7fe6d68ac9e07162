"""Host state assembly and the cluster mode derived from the masters' health."""

from __future__ import annotations

from typing import Any

from relay.cluster_status.verdicts.connection import CheckOutcome
from relay.cluster_status.verdicts.databases import HostState, cluster_mode, judge_check


def host(role: str = "master", **kwargs: Any) -> HostState:
    return HostState(label=f"{role}:3306", host=role, port=3306, role=role, **kwargs)  # type: ignore[arg-type]


def test_read_write_when_every_enabled_master_is_healthy() -> None:
    verdict = cluster_mode([host("master"), host("replica", healthy=False)])
    assert (verdict.mode, verdict.reason) == ("read-write", None)


def test_read_only_when_the_master_is_unhealthy() -> None:
    verdict = cluster_mode([host("master", healthy=False), host("replica")])
    assert verdict.mode == "read-only"
    assert verdict.reason == "master master:3306 is unhealthy"


def test_read_only_without_a_master_or_with_it_disabled() -> None:
    assert cluster_mode([host("replica")]).reason == "no master is configured"
    assert cluster_mode([]).mode == "read-only"
    disabled = cluster_mode([host("master", disabled=True), host("replica")])
    assert (disabled.mode, disabled.reason) == ("read-only", "the master is disabled")


def test_a_disabled_extra_master_does_not_matter() -> None:
    verdict = cluster_mode([host("master"), host("master", disabled=True, healthy=False)])
    assert verdict.mode == "read-write"


def test_judge_check_only_judges_replication_when_the_query_ran() -> None:
    connection, replication = judge_check(
        CheckOutcome(ran=False, latency=0.1, error_code=1045, error_message="denied"),
        is_master=True,
    )
    assert connection.status == "auth"
    assert replication is None
    connection, replication = judge_check(CheckOutcome(ran=True, latency=0.1), is_master=False)
    assert connection.status == "okay"
    assert replication is not None
    assert replication.status == "replica-none"
