"""A checking node's published data reads back as the reading it came from."""

from __future__ import annotations

import pytest

from relay.cluster_status.verdicts.shared_reading import reading_from_data
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

KEYS = ("relay.cluster.databases", "relay.cluster.repositories")


def full_reading() -> ClusterStatusReading:
    device = DeviceReading("repo1", "PHID-DEV", 7, True, True, False, None, "alice", 1.5)
    repository = RepositoryReading(
        "PHID-REPO",
        "Demo",
        "R1",
        "synchronized",
        7,
        ("repo1",),
        (("repo2", 6),),
        (device,),
        2.0,
        1.0,
        ("stale",),
        WriteLockReading("repo1", "owner", "alice", 3.0, 4.0, False),
        None,
    )
    service = ServiceReading(
        "PHID-SVC", "repos", False, ("repo1",), ("repo1", "repo2"), "Partial", 1.0, ("m",),
        (repository,),
    )  # fmt: skip
    database = DatabaseReading(
        "db1:3306",
        "db1",
        3306,
        "replica",
        False,
        ("p1",),
        ConnectionReading("okay", None, 1.5),
        ReplicationReading("not-replicating", None, "stopped", "db0"),
        HealthReading(True, 5, 0, 5, 10.0, None),
    )
    return ClusterStatusReading(
        instance="default",
        observer="host",
        databases_key=KEYS[0],
        repositories_key=KEYS[1],
        mode="read-only",
        mode_reason="because",
        databases=(database,),
        repositories=RepositoriesReading(
            "default", "host", 9.0, "db1:3306", None, True, (service,)
        ),
    )


def test_the_published_data_reads_back_unchanged() -> None:
    reading = full_reading()
    assert reading.repositories is not None
    databases = {"observer": "host", **reading.as_dict()}
    back = reading_from_data(
        databases, reading.repositories.as_dict(), instance="default", keys=KEYS
    )
    assert back == reading


def test_nothing_heard_yet_is_an_empty_read_write_reading() -> None:
    reading = reading_from_data(None, None, instance="default", keys=KEYS)
    assert (reading.mode, reading.databases, reading.repositories) == ("read-write", (), None)


def test_a_foreign_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="unexpected shape"):
        reading_from_data({"databases": [{"ref": "x"}]}, None, instance="default", keys=KEYS)
