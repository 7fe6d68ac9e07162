"""Replication verdicts from one SHOW REPLICA STATUS row and the configured role."""

from __future__ import annotations

from typing import Any

import pytest

from relay.cluster_status.verdicts.replication import delay_bucket, replication_verdict


def row(**columns: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Master_Host": "db-master",
        "Slave_IO_Running": "Yes",
        "Slave_SQL_Running": "Yes",
        "Seconds_Behind_Master": 0,
        "Last_SQL_Error": "",
        "Last_IO_Error": "",
    }
    base.update(columns)
    return base


def test_master_not_replicating_is_okay() -> None:
    verdict = replication_verdict(None, is_master=True)
    assert (verdict.status, verdict.delay, verdict.message) == ("okay", None, None)


def test_replica_replicating_is_okay_with_its_delay() -> None:
    verdict = replication_verdict(row(Seconds_Behind_Master=3), is_master=False)
    assert (verdict.status, verdict.delay, verdict.master_host) == ("okay", 3, "db-master")


def test_master_that_replicates_is_master_replica() -> None:
    verdict = replication_verdict(row(Master_Host="other-db"), is_master=True)
    assert verdict.status == "master-replica"
    assert verdict.message is not None
    assert "other-db" in verdict.message


def test_replica_without_replication_is_replica_none() -> None:
    verdict = replication_verdict(None, is_master=False)
    assert verdict.status == "replica-none"
    assert verdict.delay is None


@pytest.mark.parametrize("empty", [None, "", "  "])
def test_unknown_delay_is_not_replicating(empty: Any) -> None:
    verdict = replication_verdict(
        row(Seconds_Behind_Master=empty, Slave_SQL_Running="No", Last_SQL_Error="dup key"),
        is_master=False,
    )
    assert verdict.status == "not-replicating"
    assert verdict.message == (
        "replication is stopped (IO thread: Yes, SQL thread: No); Last_SQL_Error: dup key"
    )


def test_not_replicating_overrides_master_replica_as_in_phorge() -> None:
    verdict = replication_verdict(row(Seconds_Behind_Master=None), is_master=True)
    assert verdict.status == "not-replicating"


@pytest.mark.parametrize(
    ("delay", "status"), [(30, "okay"), (31, "replica-slow"), (3600, "replica-slow")]
)
def test_more_than_30_seconds_behind_is_replica_slow(delay: int, status: str) -> None:
    verdict = replication_verdict(row(Seconds_Behind_Master=delay), is_master=False)
    assert (verdict.status, verdict.delay) == (status, delay)


def test_slow_overrides_master_replica_as_in_phorge() -> None:
    verdict = replication_verdict(row(Seconds_Behind_Master=99), is_master=True)
    assert verdict.status == "replica-slow"


def test_mysql_8_source_column_names_and_text_values() -> None:
    mysql8 = {
        "Source_Host": b"primary",
        "Replica_IO_Running": "Yes",
        "Replica_SQL_Running": "Yes",
        "Seconds_Behind_Source": "45",
    }
    verdict = replication_verdict(mysql8, is_master=False)
    assert (verdict.status, verdict.delay, verdict.master_host) == ("replica-slow", 45, "primary")
    stopped = replication_verdict(
        {"Source_Host": "p", "Seconds_Behind_Source": None}, is_master=False
    )
    assert stopped.status == "not-replicating"
    assert stopped.message == "replication is stopped (IO thread: ?, SQL thread: ?)"


def test_unparsable_delay_counts_as_unknown() -> None:
    verdict = replication_verdict(row(Seconds_Behind_Master="soon"), is_master=False)
    assert verdict.status == "not-replicating"


@pytest.mark.parametrize(
    ("delay", "bucket"),
    [(None, "none"), (0, "current"), (1, "current"), (2, "behind"), (30, "behind"), (31, "slow")],
)
def test_delay_buckets(delay: int | None, bucket: str) -> None:
    assert delay_bucket(delay) == bucket


def test_the_statement_quoted_in_the_last_error_is_left_out() -> None:
    error = (
        "Error 'Operation CREATE USER failed for 'a'@'%'' on query. Default database: ''. "
        "Query: 'CREATE USER 'a'@'%' IDENTIFIED BY 'pw''"
    )
    verdict = replication_verdict(
        row(Seconds_Behind_Master=None, Slave_SQL_Running="No", Last_SQL_Error=error),
        is_master=False,
    )
    assert verdict.message == (
        "replication is stopped (IO thread: Yes, SQL thread: No); Last_SQL_Error: "
        "Error 'Operation CREATE USER failed for 'a'@'%'' on query. Default database: ''. "
        "Query: (not shown)"
    )
