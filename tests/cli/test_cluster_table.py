"""The text table of ``relay cluster-status``."""

from __future__ import annotations

from typing import Any

from relay.cli.cluster_table import render_table


def snapshot(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "instance": "default",
        "observer": "node1",
        "mode": "read-only",
        "modeReason": "master db1:3306 is unhealthy",
        "databases": [
            {
                "ref": "db1:3306",
                "role": "master",
                "disabled": False,
                "connection": {"status": "fail", "message": "#2003 refused", "latencyMs": 0.4},
                "replication": None,
                "health": {"healthy": False, "up": 0, "down": 5, "window": 5},
            },
            {
                "ref": "db2:3306",
                "role": "replica",
                "disabled": False,
                "connection": {"status": "okay", "message": None, "latencyMs": 1.25},
                "replication": {
                    "status": "replica-slow",
                    "delay": 45,
                    "message": "45 s behind the master",
                },
                "health": {"healthy": True, "up": 5, "down": 0, "window": 5},
            },
            {
                "ref": "db3:3306",
                "role": "replica",
                "disabled": True,
                "connection": None,
                "replication": None,
                "health": {"healthy": True},
            },
            {
                "ref": "db4:3306",
                "role": "replica",
                "disabled": False,
                "connection": None,
                "replication": None,
                "health": {"healthy": True, "up": 0, "window": 5},
            },
        ],
        "repositories": {
            "source": "db1:3306",
            "available": True,
            "error": None,
            "services": [
                {
                    "name": "repos001",
                    "closed": True,
                    "activeDevices": ["a", "b"],
                    "repositories": [{}, {}],
                    "verdict": "Unsynchronized",
                    "lag": 900.0,
                    "messages": ["rAPP has changes only on a for 15 min: data at risk"],
                },
                {
                    "name": "repos002",
                    "closed": False,
                    "activeDevices": [],
                    "repositories": [],
                    "verdict": "No Repositories",
                    "lag": None,
                    "messages": [],
                },
            ],
        },
    }
    base.update(overrides)
    return base


def test_full_table() -> None:
    text = render_table(snapshot())
    lines = text.splitlines()
    assert lines[0] == "Cluster status seen from node1 (instance default)"
    assert lines[1] == "Mode: read-only (master db1:3306 is unhealthy)"
    header = next(line for line in lines if "CONNECTION" in line)
    assert header.split() == [
        "HOST",
        "ROLE",
        "CONNECTION",
        "LATENCY",
        "REPLICATION",
        "DELAY",
        "HEALTH",
        "MESSAGE",
    ]
    db1 = next(line for line in lines if line.strip().startswith("db1:3306"))
    assert "fail" in db1
    assert "UNHEALTHY (0/5 up)" in db1
    assert "#2003 refused" in db1
    db2 = next(line for line in lines if line.strip().startswith("db2:3306"))
    assert "1.2 ms" in db2 or "1.3 ms" in db2
    assert "replica-slow" in db2
    assert "45 s" in db2
    assert "disabled" in next(line for line in lines if line.strip().startswith("db3:3306"))
    assert "pending" in next(line for line in lines if line.strip().startswith("db4:3306"))
    assert "  read from db1:3306" in lines
    repos = next(line for line in lines if line.strip().startswith("repos001"))
    assert repos.split() == [
        "repos001",
        "closed",
        "2",
        "active",
        "2",
        "Unsynchronized",
        "15m",
    ]
    assert "  repos001: rAPP has changes only on a for 15 min: data at risk" in lines
    assert text.endswith("\n")


def test_empty_and_unavailable_states() -> None:
    text = render_table(
        snapshot(
            databases=[],
            mode="read-only",
            modeReason=None,
            repositories={"source": None, "available": False, "error": None},
        )
    )
    assert "Mode: read-only\n" in text
    assert "(no database hosts configured)" in text
    assert "unavailable: not read yet" in text
    off = render_table(snapshot(repositories=None))
    assert "(repository status is switched off)" in off
    none = render_table(snapshot(repositories={"available": True, "services": []}))
    assert "(no repository cluster services)" in none
    calm = render_table(
        snapshot(
            repositories={
                "available": True,
                "services": [{"name": "s", "verdict": "Synchronized", "messages": []}],
            }
        )
    )
    assert "Needs attention" not in calm
    bare = render_table({})
    assert bare.startswith("Cluster status seen from ? (instance default)\nMode: unknown")


def test_delays_and_lags_read_as_every_duration_of_the_cli() -> None:
    base = snapshot()
    slow = {**base["databases"][1], "replication": {"status": "replica-slow", "delay": 125}}
    current = {**base["databases"][1], "ref": "db5:3306", "replication": {"delay": 1}}
    service = {**base["repositories"]["services"][0], "lag": 7380.0}
    text = render_table(
        snapshot(databases=[slow, current], repositories={"available": True, "services": [service]})
    )
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("  ")}
    assert rows["db2:3306"][5:8] == ["replica-slow", "2m", "5s"]
    assert rows["db5:3306"][5:7] == ["-", "-"]  # a second behind is not worth showing
    assert rows["repos001"][-2:] == ["2h", "3m"]
