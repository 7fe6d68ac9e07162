"""A node taking the checks over starts from the published state."""

from __future__ import annotations

from relay.cluster_status.monitor import ClusterStatusMonitor
from relay.cluster_status.verdicts.events import DATABASES_TYPE, Publisher
from relay.cluster_status.verdicts.resume import Resume, resume_from
from tests.cluster_status.helpers import fast_config


def test_resume_reads_health_and_mode_from_the_last_message() -> None:
    data = {
        "mode": "read-only",
        "databases": [
            {"ref": "db1:3306", "health": {"healthy": False}},
            {"ref": "db2:3306", "health": {"healthy": True}},
            {"ref": 5, "health": {"healthy": True}},
            {"ref": "db3:3306", "health": None},
        ],
    }
    resume = resume_from({DATABASES_TYPE: "d"}, data)
    assert resume == Resume(
        {DATABASES_TYPE: "d"}, {"db1:3306": False, "db2:3306": True}, "read-only"
    )
    assert resume_from({}, None) == Resume()


def test_a_seeded_publisher_stays_quiet_until_the_fingerprint_changes() -> None:
    first = Publisher("k", "t")
    assert first.offer({}, ("a",)) is not None
    assert first.digest is not None
    second = Publisher("k", "t")
    second.seed(first.digest)
    assert second.offer({}, ("a",)) is None
    assert second.offer({}, ("b",)) is not None


def test_a_resumed_monitor_starts_from_the_published_health() -> None:
    config = fast_config([{"host": "127.0.0.1", "port": 1, "role": "master"}])
    resume = Resume({DATABASES_TYPE: "abc"}, {"127.0.0.1:1": False}, "read-only")
    monitor = ClusterStatusMonitor(config, lambda message: None, resume=resume)
    assert monitor.digest(DATABASES_TYPE) == "abc"
    assert monitor.digest("other") is None
    reading = monitor.reading()
    assert reading.mode == "read-only"
    assert reading.databases[0].health.healthy is False
