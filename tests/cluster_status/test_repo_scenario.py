"""Repository sync from real rows in Phorge's tables on a real MariaDB."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from relay.cluster_status import driver
from relay.cluster_status.verdicts.events import REPOSITORIES_TYPE
from relay.config.cluster_status import ClusterStatusConfig
from tests.cluster_status.helpers import MONITOR_PASSWORD, MONITOR_USER, StartMonitor, wait_until
from tests.cluster_status.phorge_tables import PhorgeTables

INTERVAL = 0.2


def repo_config(phorge: PhorgeTables, **overrides: Any) -> ClusterStatusConfig:
    section: dict[str, Any] = {
        "databases": [],
        "repository": {
            "host": "127.0.0.1",
            "port": phorge.server.port,
            "user": MONITOR_USER,
            "pass": MONITOR_PASSWORD,
        },
        "namespace": phorge.ns,
        "repository_interval_seconds": INTERVAL,
        "connect_timeout_seconds": 1,
        "query_timeout_seconds": 1,
    }
    section.update(overrides)
    return ClusterStatusConfig.model_validate(section)


def is_repo(message: dict[str, Any]) -> bool:
    return bool(message["type"] == REPOSITORIES_TYPE)


def service_named(message: dict[str, Any], name: str) -> dict[str, Any]:
    for service in message["data"]["services"]:
        if service["name"] == name:
            return dict(service)
    raise AssertionError(f"no service {name!r} in {message['data']}")


async def verdict_of(
    phorge: PhorgeTables, start_monitor: StartMonitor, name: str = "repos001"
) -> dict[str, Any]:
    _, sink = await start_monitor(repo_config(phorge))
    message = await sink.wait_for(is_repo)
    assert message["data"]["available"], message["data"]["error"]
    assert message["data"]["source"] == f"127.0.0.1:{phorge.server.port}"
    return service_named(message, name)


def two_devices(phorge: PhorgeTables, *, closed: bool | None = None) -> tuple[str, str, str]:
    service = phorge.add_service("repos001")
    a = phorge.add_device("repo001.example.net")
    b = phorge.add_device("repo002.example.net")
    phorge.bind(service, a)
    phorge.bind(service, b)
    if closed is not None:
        phorge.set_property(service, "closed", closed)
    return service, a, b


async def test_no_repositories(phorge: PhorgeTables, start_monitor: StartMonitor) -> None:
    two_devices(phorge)
    service = await verdict_of(phorge, start_monitor)
    assert (service["verdict"], service["repositories"], service["closed"]) == (
        "No Repositories",
        [],
        False,
    )
    assert service["activeDevices"] == ["repo001.example.net", "repo002.example.net"]


async def test_synchronized(phorge: PhorgeTables, start_monitor: StartMonitor) -> None:
    service, a, b = two_devices(phorge)
    repo = phorge.add_repository("Application", service, callsign="APP")
    version = phorge.push(repo, epoch=int(time.time()) - 3600)
    phorge.set_version(repo, a, version)
    phorge.set_version(repo, b, version)
    result = await verdict_of(phorge, start_monitor)
    assert (result["verdict"], result["lag"]) == ("Synchronized", None)
    (repository,) = result["repositories"]
    assert repository["monogram"] == "rAPP"
    assert repository["leaderVersion"] == version
    assert repository["leaders"] == ["repo001.example.net", "repo002.example.net"]
    assert repository["phid"] == repo  # VARBINARY decoded to text


async def test_partial_with_two_leaders(phorge: PhorgeTables, start_monitor: StartMonitor) -> None:
    service, a, b = two_devices(phorge)
    c = phorge.add_device("repo003.example.net")
    phorge.bind(service, c)
    repo = phorge.add_repository("Application", service)
    old = phorge.push(repo, epoch=int(time.time()) - 7200)
    new = phorge.push(repo, epoch=int(time.time()) - 7000)
    phorge.set_version(repo, a, new)
    phorge.set_version(repo, b, new)
    phorge.set_version(repo, c, old)
    result = await verdict_of(phorge, start_monitor)
    assert result["verdict"] == "Partial"
    assert 6990 <= result["lag"] <= 7100
    (repository,) = result["repositories"]
    assert repository["followers"] == [{"device": "repo003.example.net", "version": old}]


async def test_partial_with_one_leader_and_a_recent_push(
    phorge: PhorgeTables, start_monitor: StartMonitor
) -> None:
    service, a, b = two_devices(phorge)
    repo = phorge.add_repository("Application", service)
    old = phorge.push(repo, epoch=int(time.time()) - 86400)
    new = phorge.push(repo, epoch=int(time.time()) - 30)
    phorge.set_version(repo, a, new)
    phorge.set_version(repo, b, old)
    result = await verdict_of(phorge, start_monitor)
    assert result["verdict"] == "Partial"
    assert 25 <= result["lag"] <= 120


async def test_unsynchronized_with_one_leader_and_an_old_push(
    phorge: PhorgeTables, start_monitor: StartMonitor
) -> None:
    service, a, b = two_devices(phorge)
    repo = phorge.add_repository("Application", service, callsign="APP")
    old = phorge.push(repo, epoch=int(time.time()) - 7200)
    new = phorge.push(repo, epoch=int(time.time()) - 3600)
    phorge.set_version(repo, a, new)
    phorge.set_version(repo, b, old)
    result = await verdict_of(phorge, start_monitor)
    assert result["verdict"] == "Unsynchronized"
    assert 3590 <= result["lag"] <= 3700
    assert result["messages"] == [
        "rAPP has changes only on repo001.example.net for 60 min: data at risk"
    ]


async def test_ambiguous_leader(phorge: PhorgeTables, start_monitor: StartMonitor) -> None:
    service, _, _ = two_devices(phorge)
    phorge.add_repository("Application", service)  # no version row on any device
    result = await verdict_of(phorge, start_monitor)
    assert result["verdict"] == "Ambiguous Leader"
    (repository,) = result["repositories"]
    assert repository["failures"] == ["ambiguous-leader"]


async def test_loss_of_leaders_when_the_leader_binding_is_disabled(
    phorge: PhorgeTables, start_monitor: StartMonitor
) -> None:
    service, a, b = two_devices(phorge)
    repo = phorge.add_repository("Application", service)
    old = phorge.push(repo, epoch=int(time.time()) - 600)
    new = phorge.push(repo, epoch=int(time.time()) - 60)
    phorge.set_version(repo, a, new)
    phorge.set_version(repo, b, old)
    phorge.set_binding_disabled(service, a, True)
    result = await verdict_of(phorge, start_monitor)
    (repository,) = result["repositories"]
    assert repository["failures"] == ["loss-of-leaders"]
    assert result["activeDevices"] == ["repo002.example.net"]
    assert repository["leaderVersion"] == old
    devices = {d["device"]: d for d in repository["devices"]}
    assert (
        devices["repo001.example.net"]["active"],
        devices["repo001.example.net"]["version"],
    ) == (
        False,
        new,
    )
    assert any("lost its leaders" in m for m in result["messages"])


async def test_write_interruption(phorge: PhorgeTables, start_monitor: StartMonitor) -> None:
    service, a, b = two_devices(phorge)
    repo = phorge.add_repository("Application", service)
    version = phorge.push(repo, epoch=int(time.time()) - 4000)
    phorge.set_version(repo, b, version)
    started = int(time.time()) - 900
    phorge.set_version(
        repo,
        a,
        version,
        writing=True,
        write_properties={"userPHID": "PHID-USER-alice", "epoch": started, "devicePHID": a},
        lock_owner="4242.abcdefabcdef",
    )
    result = await verdict_of(phorge, start_monitor)
    (repository,) = result["repositories"]
    assert repository["failures"] == ["write-interruption"]
    lock = repository["writeLock"]
    assert (lock["device"], lock["lockOwner"], lock["writer"], lock["since"]) == (
        "repo001.example.net",
        "4242.abcdefabcdef",
        "PHID-USER-alice",
        started,
    )
    assert lock["interrupted"] is True
    assert lock["heldFor"] >= 900


async def test_closed_service(phorge: PhorgeTables, start_monitor: StartMonitor) -> None:
    two_devices(phorge, closed=True)
    other = phorge.add_service("repos002")
    phorge.set_property(other, "closed", False)
    _, sink = await start_monitor(repo_config(phorge))
    message = await sink.wait_for(is_repo)
    assert service_named(message, "repos001")["closed"] is True
    assert service_named(message, "repos002")["closed"] is False


async def test_other_service_types_and_repositories_are_left_out(
    phorge: PhorgeTables, start_monitor: StartMonitor
) -> None:
    service, _, _ = two_devices(phorge)
    phorge.add_service("search001", service_type="cluster.search")
    phorge.add_repository("Mercurial", service, vcs="hg")
    phorge.add_repository("Local", None)
    _, sink = await start_monitor(repo_config(phorge))
    message = await sink.wait_for(is_repo)
    assert [s["name"] for s in message["data"]["services"]] == ["repos001"]
    assert service_named(message, "repos001")["verdict"] == "No Repositories"


async def test_a_row_change_is_pushed_within_one_poll_and_unchanged_polls_send_nothing(
    phorge: PhorgeTables, start_monitor: StartMonitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    original = driver.RepositoryReader.read

    async def counting_read(self: driver.RepositoryReader) -> Any:
        nonlocal reads
        reads += 1
        return await original(self)

    monkeypatch.setattr(driver.RepositoryReader, "read", counting_read)
    service, a, b = two_devices(phorge)
    repo = phorge.add_repository("Application", service)
    old = phorge.push(repo, epoch=int(time.time()) - 10)
    new = phorge.push(repo, epoch=int(time.time()) - 5)
    phorge.set_version(repo, a, new)
    phorge.set_version(repo, b, old)
    _, sink = await start_monitor(repo_config(phorge))
    first = await sink.wait_for(is_repo)
    assert service_named(first, "repos001")["verdict"] == "Partial"

    # Unchanged polls (lag grows, nothing else) send nothing.
    seen = reads
    await wait_until(lambda: reads >= seen + 3)
    assert sink.of_type(REPOSITORIES_TYPE) == [first]

    # The follower catches up: pushed within one poll interval.
    await asyncio.to_thread(phorge.set_version, repo, b, new)
    changed_at = time.monotonic()
    synced = await sink.wait_for(
        lambda m: is_repo(m) and service_named(m, "repos001")["verdict"] == "Synchronized",
        within=5,
    )
    # One interval, plus the time one read itself takes.
    assert time.monotonic() - changed_at < INTERVAL + 0.5
    assert sink.of_type(REPOSITORIES_TYPE)[-1] is synced


async def test_missing_tables_are_reported_not_raised(
    phorge: PhorgeTables, start_monitor: StartMonitor
) -> None:
    _, sink = await start_monitor(repo_config(phorge, namespace="nosuchnamespace"))
    message = await sink.wait_for(is_repo)
    assert message["data"]["available"] is False
    assert message["data"]["error"].startswith("#1146 ")  # no such table


async def test_repository_state_follows_the_master_by_default(
    phorge: PhorgeTables, start_monitor: StartMonitor
) -> None:
    two_devices(phorge)
    config = ClusterStatusConfig.model_validate(
        {
            "databases": [
                {
                    "host": "127.0.0.1",
                    "port": phorge.server.port,
                    "role": "master",
                    "user": MONITOR_USER,
                    "pass": MONITOR_PASSWORD,
                }
            ],
            "namespace": phorge.ns,
            "database_interval_seconds": 0.05,
            "repository_interval_seconds": INTERVAL,
        }
    )
    monitor, sink = await start_monitor(config)
    message = await sink.wait_for(is_repo)
    assert message["data"]["source"] == f"127.0.0.1:{phorge.server.port}"
    assert service_named(message, "repos001")["verdict"] == "No Repositories"
    await sink.wait_for(lambda m: m["type"] == "relay.cluster.databases")
    snapshot = monitor.reading().as_dict()
    assert snapshot["repositories"]["services"][0]["name"] == "repos001"
    assert snapshot["mode"] == "read-write"


async def test_no_source_for_repositories(start_monitor: StartMonitor) -> None:
    config = ClusterStatusConfig.model_validate(
        {"databases": [{"host": "db", "role": "master", "disabled": True}]}
    )
    monitor, sink = await start_monitor(config)
    message = await sink.wait_for(is_repo)
    assert message["data"]["available"] is False
    assert "no enabled master" in message["data"]["error"]
    assert monitor.reading().as_dict()["repositories"]["source"] is None


async def test_one_read_is_one_snapshot_even_on_a_read_committed_server(
    phorge: PhorgeTables, start_monitor: StartMonitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some installs run MariaDB with transaction-isolation = READ-COMMITTED,
    # under which WITH CONSISTENT SNAPSHOT alone gives each query its own view.
    phorge.server.sql("SET GLOBAL tx_isolation = 'READ-COMMITTED'")
    service, a, b = two_devices(phorge)
    repo = phorge.add_repository("Application", service)
    old = phorge.push(repo, epoch=int(time.time()) - 7200)
    written = int(time.time()) - 60
    new = phorge.push(repo, epoch=written)
    phorge.set_version(repo, a, new)
    phorge.set_version(repo, b, old)

    def push_again() -> None:
        # A push lands on the leader between two queries of one read.
        newer = phorge.push(repo, epoch=int(time.time()))
        phorge.set_version(repo, a, newer)

    original = driver._fetch_all
    pushed = False

    async def fetch_then_push(conn: Any, sql: str, args: Any = None) -> Any:
        nonlocal pushed
        rows = await original(conn, sql, args)
        if not pushed and "repository_workingcopyversion" in sql and "JOIN" not in sql:
            pushed = True
            await asyncio.to_thread(push_again)
        return rows

    monkeypatch.setattr(driver, "_fetch_all", fetch_then_push)
    result = await verdict_of(phorge, start_monitor)
    assert pushed
    # The read saw the leader at ``new``, pushed a minute ago: Partial, and
    # not "Unsynchronized" for want of the epoch of a version already gone.
    assert result["verdict"] == "Partial"
    (repository,) = result["repositories"]
    assert (repository["leaderVersion"], repository["lastWrite"]) == (new, written)
