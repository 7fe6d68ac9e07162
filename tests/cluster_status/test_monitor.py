"""The monitor's own logic with a scripted checker: delivery, errors, stopping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from relay.cluster_status import driver
from relay.cluster_status import monitor as monitor_module
from relay.cluster_status.errors import RepositoryReadError
from relay.cluster_status.monitor import ClusterStatusMonitor
from relay.cluster_status.verdicts.connection import CheckOutcome
from relay.cluster_status.verdicts.events import DATABASES_TYPE, REPOSITORIES_TYPE
from relay.config.cluster_status import ClusterStatusConfig
from tests.cluster_status.helpers import StartMonitor, wait_until

SECRET = "Monitor-unit-SECRET-77"


def config(**overrides: Any) -> ClusterStatusConfig:
    section: dict[str, Any] = {
        "databases": [{"host": "db1", "role": "master", "pass": SECRET}],
        "database_interval_seconds": 0.01,
        "repository": {"enabled": False},
    }
    section.update(overrides)
    return ClusterStatusConfig.model_validate(section)


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Outcomes (or exceptions) the fake checker returns, in order; then okay forever."""
    steps: list[Any] = []

    async def check(self: driver.DatabaseChecker) -> CheckOutcome:
        step = steps.pop(0) if steps else CheckOutcome(ran=True, latency=0.001)
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            result: CheckOutcome = await step()
            return result
        assert isinstance(step, CheckOutcome)
        return step

    monkeypatch.setattr(driver.DatabaseChecker, "check", check)
    return steps


async def test_emit_failures_do_not_stop_the_monitor(
    script: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    delivered: list[dict[str, Any]] = []

    def emit(message: dict[str, Any]) -> None:
        delivered.append(message)
        if len(delivered) == 1:
            raise RuntimeError("core hiccup")

    script += [CheckOutcome(ran=False, latency=0.0, error_message="down")] * 5
    monitor = ClusterStatusMonitor(config(), emit)
    await monitor.start()
    try:
        await wait_until(lambda: len(delivered) >= 2)
    finally:
        await monitor.stop()
    assert "delivering relay.cluster.databases failed" in caplog.text


async def test_unexpected_checker_errors_count_as_failures(
    script: list[Any], start_monitor: StartMonitor, caplog: pytest.LogCaptureFixture
) -> None:
    script.append(ValueError("bug"))
    _, sink = await start_monitor(config())
    message = await sink.wait_for(lambda m: True)
    entry = message["data"]["databases"][0]
    assert entry["connection"] == {
        "status": "fail",
        "message": "internal error",
        "latencyMs": entry["connection"]["latencyMs"],
    }
    assert "check of db1:3306 failed" in caplog.text


async def test_start_twice_is_refused(script: list[Any], start_monitor: StartMonitor) -> None:
    monitor, _ = await start_monitor(config())
    with pytest.raises(RuntimeError, match="already running"):
        await monitor.start()


async def test_stop_ends_a_loop_whose_cancellation_was_swallowed(script: list[Any]) -> None:
    entered = asyncio.Event()

    async def swallowing_check() -> CheckOutcome:
        # What asyncio.wait_for on Python 3.11 can do when a cancel races a
        # completing connect: the cancellation is lost, the call returns.
        entered.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        return CheckOutcome(ran=True, latency=0.0)

    script.append(swallowing_check)
    monitor = ClusterStatusMonitor(config(), lambda m: None)
    await monitor.start()
    await entered.wait()
    async with asyncio.timeout(5):
        await monitor.stop()


async def test_server_messages_are_redacted(script: list[Any], start_monitor: StartMonitor) -> None:
    script.append(
        CheckOutcome(
            ran=False,
            latency=0.0,
            error_code=1045,
            error_message=f"Access denied for user '{SECRET}'",
        )
    )
    monitor, sink = await start_monitor(config())
    message = await sink.wait_for(lambda m: True)
    text = message["data"]["databases"][0]["connection"]["message"]
    assert text == "#1045 Access denied for user '********'"
    assert SECRET not in repr(monitor.reading().as_dict())


async def test_time_comes_from_the_injected_clocks(
    script: list[Any], start_monitor: StartMonitor
) -> None:
    monitor, sink = await start_monitor(config(), wall_clock=lambda: 1234.5)
    message = await sink.wait_for(lambda m: True)
    assert message["data"]["updated"] == 1234.5
    assert message["data"]["databases"][0]["health"]["checkedAt"] == 1234.5
    assert monitor.reading().as_dict()["databases"][0]["health"]["checkedAt"] == 1234.5


async def test_losses_are_logged_at_warning_and_recoveries_at_info(
    script: list[Any], start_monitor: StartMonitor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.status")
    script += [CheckOutcome(ran=False, latency=0.0, error_message="down")] * 5
    _, sink = await start_monitor(config())
    down = await sink.wait_for(lambda m: m["data"]["mode"] == "read-only")
    await sink.wait_for(
        lambda m: m["data"]["mode"] == "read-write", after=sink.messages.index(down) + 1
    )
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert logged[1:] == [
        ("WARNING", "cluster status: database db1:3306 is now unhealthy"),
        ("WARNING", "cluster status: mode is now read-only (master db1:3306 is unhealthy)"),
        ("INFO", "cluster status: database db1:3306 is now healthy"),
        ("INFO", "cluster status: mode is now read-write"),
    ]
    assert logged[0][1].startswith("cluster status: watching 1 database host(s)")


async def test_a_cluster_read_only_from_the_start_is_a_warning(
    script: list[Any], start_monitor: StartMonitor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.status")
    disabled = [{"host": "db1", "role": "master", "pass": SECRET, "disabled": True}]
    _, sink = await start_monitor(config(databases=disabled))
    await sink.wait_for(lambda m: m["data"]["mode"] == "read-only")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["cluster status: mode is now read-only (the master is disabled)"]


async def test_repository_status_off_means_no_repository_messages(
    script: list[Any], start_monitor: StartMonitor
) -> None:
    monitor, sink = await start_monitor(config())
    await sink.wait_for(lambda m: True)
    assert monitor.reading().as_dict()["repositories"] is None
    assert {m["type"] for m in sink.messages} == {DATABASES_TYPE}


async def test_checks_that_overrun_every_timeout_are_cut_off(
    script: list[Any], start_monitor: StartMonitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitor_module, "_SAFETY_MARGIN", 0.0)

    async def never() -> CheckOutcome:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    script.append(never)
    _, sink = await start_monitor(config(connect_timeout_seconds=0.02, query_timeout_seconds=0.02))
    message = await sink.wait_for(lambda m: True)
    assert message["data"]["databases"][0]["connection"]["message"] == "check did not finish"


async def test_repository_read_failures_of_every_kind(
    start_monitor: StartMonitor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(monitor_module, "_SAFETY_MARGIN", 0.0)
    steps: list[str] = ["bug", "hang"]

    async def read(self: driver.RepositoryReader) -> Any:
        step = steps.pop(0) if steps else "bug"
        if step == "bug":
            raise ValueError("bug")
        await asyncio.Event().wait()

    monkeypatch.setattr(driver.RepositoryReader, "read", read)
    section = {
        "databases": [],
        "repository": {"host": "db9"},
        "repository_interval_seconds": 0.01,
        "connect_timeout_seconds": 0.02,
        "query_timeout_seconds": 0.02,
    }
    _, sink = await start_monitor(ClusterStatusConfig.model_validate(section))
    first = await sink.wait_for(lambda m: m["type"] == REPOSITORIES_TYPE)
    assert first["data"]["error"] == "internal error"
    assert "reading the repository tables failed" in caplog.text
    second = await sink.wait_for(lambda m: m["type"] == REPOSITORIES_TYPE and m is not first)
    assert second["data"]["error"] == "reading the repository tables did not finish"


async def test_stop_ends_a_repository_loop_whose_cancellation_was_swallowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered = asyncio.Event()

    async def read(self: driver.RepositoryReader) -> Any:
        entered.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        raise RepositoryReadError("gone")

    monkeypatch.setattr(driver.RepositoryReader, "read", read)
    section = {"databases": [], "repository": {"host": "db9"}}
    monitor = ClusterStatusMonitor(ClusterStatusConfig.model_validate(section), lambda m: None)
    await monitor.start()
    await entered.wait()
    async with asyncio.timeout(5):
        await monitor.stop()
