"""Connection status from a check outcome: Phorge's error-code mapping."""

from __future__ import annotations

import pytest

from relay.cluster_status.verdicts.connection import CheckOutcome, connection_verdict, is_reachable


def failed(code: int | None, message: str = "boom") -> CheckOutcome:
    return CheckOutcome(ran=False, latency=0.01, error_code=code, error_message=message)


def test_a_query_that_ran_is_okay() -> None:
    verdict = connection_verdict(CheckOutcome(ran=True, latency=0.002, row=None))
    assert verdict.status == "okay"
    assert verdict.message is None


@pytest.mark.parametrize("code", [1045, 1698])
def test_refused_credentials_are_auth(code: int) -> None:
    verdict = connection_verdict(failed(code, "Access denied for user 'u'@'h'"))
    assert verdict.status == "auth"
    assert verdict.message == f"#{code} Access denied for user 'u'@'h'"


@pytest.mark.parametrize("code", [1227, 1044, 1142, 1143])
def test_missing_privilege_is_replication_client(code: int) -> None:
    verdict = connection_verdict(failed(code, "Access denied; you need SLAVE MONITOR"))
    assert verdict.status == "replication-client"
    assert verdict.message is not None
    # The hint names both the MySQL and the MariaDB 10.5.9+ privilege.
    assert "REPLICATION CLIENT" in verdict.message
    assert "SLAVE MONITOR" in verdict.message
    assert f"#{code}" in verdict.message


def test_other_errors_and_timeouts_are_fail() -> None:
    refused = connection_verdict(failed(2003, "Can't connect to MySQL server"))
    assert refused.status == "fail"
    assert refused.message == "#2003 Can't connect to MySQL server"
    timeout = connection_verdict(failed(None, "timed out after 2 s while connecting"))
    assert timeout.status == "fail"
    assert timeout.message == "timed out after 2 s while connecting"
    nothing = connection_verdict(CheckOutcome(ran=False, latency=0.0))
    assert (nothing.status, nothing.message) == ("fail", "unknown error")


def test_reachability_for_health() -> None:
    # Phorge's health check only opens a connection: a missing monitoring
    # privilege still means the host is up.
    assert is_reachable("okay")
    assert not is_reachable("replication-client")
    assert not is_reachable("auth")
    assert not is_reachable("fail")
