"""The aiomysql edge without a server: fallbacks, timeouts, closing, error text."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiomysql
import pytest
from pydantic import SecretStr

from relay.cluster_status import driver
from relay.cluster_status.errors import RepositoryReadError
from relay.config.cluster_status import ConnectionTarget
from relay.errors import RelayError

TARGET = ConnectionTarget("db.example", 3306, "monitor", SecretStr("pw"))


class FakeConnection:
    """Stands in for an aiomysql connection; records how it was closed."""

    def __init__(self, *, quit_error: BaseException | None = None) -> None:
        self.quit_error = quit_error
        self.quit = False
        self.closed = False

    async def ensure_closed(self) -> None:
        if self.quit_error is not None:
            raise self.quit_error
        self.quit = True

    def close(self) -> None:
        self.closed = True


def checker(**kwargs: Any) -> driver.DatabaseChecker:
    ticks = iter(range(1000))
    kwargs.setdefault("connect_timeout", 0.5)
    kwargs.setdefault("query_timeout", 0.5)
    return driver.DatabaseChecker(TARGET, clock=lambda: float(next(ticks)), **kwargs)


async def test_old_servers_fall_back_to_show_slave_status(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = FakeConnection()
    queries: list[str] = []

    async def connect(_target: ConnectionTarget, _timeout: float) -> FakeConnection:
        return conn

    async def fetch_one(_conn: Any, sql: str) -> dict[str, Any] | None:
        queries.append(sql)
        if sql == "SHOW REPLICA STATUS":
            raise aiomysql.ProgrammingError(1064, "You have an error in your SQL syntax")
        return {"Master_Host": "m", "Seconds_Behind_Master": 0}

    monkeypatch.setattr(driver, "_connect", connect)
    monkeypatch.setattr(driver, "_fetch_one", fetch_one)
    check = checker()
    first = await check.check()
    assert first.ran
    assert first.row == {"Master_Host": "m", "Seconds_Behind_Master": 0}
    assert first.latency == 1.0  # measured on the injected clock
    second = await check.check()
    assert second.ran
    # The failed attempt is not repeated once the server is known to be old.
    assert queries == ["SHOW REPLICA STATUS", "SHOW SLAVE STATUS", "SHOW SLAVE STATUS"]
    assert conn.quit
    assert conn.closed


async def test_other_query_errors_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    async def connect(_target: ConnectionTarget, _timeout: float) -> FakeConnection:
        return FakeConnection()

    async def fetch_one(_conn: Any, _sql: str) -> dict[str, Any] | None:
        raise aiomysql.OperationalError(1227, "Access denied; you need SLAVE MONITOR")

    monkeypatch.setattr(driver, "_connect", connect)
    monkeypatch.setattr(driver, "_fetch_one", fetch_one)
    outcome = await checker().check()
    assert (outcome.ran, outcome.error_code) == (False, 1227)
    assert outcome.error_message == "Access denied; you need SLAVE MONITOR"


async def test_a_hanging_connect_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    async def connect(_target: ConnectionTarget, _timeout: float) -> FakeConnection:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(driver, "_connect", connect)
    outcome = await checker(connect_timeout=0.05).check()
    assert (outcome.ran, outcome.error_code) == (False, None)
    assert outcome.error_message == "timed out after 0.05 s while connecting"


async def test_a_hanging_query_times_out_and_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = FakeConnection()

    async def connect(_target: ConnectionTarget, _timeout: float) -> FakeConnection:
        return conn

    async def fetch_one(_conn: Any, _sql: str) -> dict[str, Any] | None:
        await asyncio.Event().wait()
        return None

    monkeypatch.setattr(driver, "_connect", connect)
    monkeypatch.setattr(driver, "_fetch_one", fetch_one)
    outcome = await checker(query_timeout=0.05).check()
    assert outcome.error_message == "timed out after 0.05 s while running SHOW REPLICA STATUS"
    assert conn.closed


async def test_os_errors_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    async def connect(_target: ConnectionTarget, _timeout: float) -> FakeConnection:
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(driver, "_connect", connect)
    outcome = await checker().check()
    assert outcome.error_message == "ConnectionResetError: [Errno 104] Connection reset by peer"


async def test_closing_never_raises() -> None:
    broken = FakeConnection(quit_error=aiomysql.OperationalError(2013, "Lost connection"))
    await driver._close(broken)
    assert broken.closed
    weird = FakeConnection(quit_error=RuntimeError("transport closed"))
    await driver._close(weird)
    assert weird.closed


def test_error_text_includes_the_os_reason() -> None:
    error = aiomysql.OperationalError(2003, "Can't connect to MySQL server on 'db'")
    error.__cause__ = ConnectionRefusedError(111, "Connect call failed ('db', 3306)")
    assert driver._mysql_error(error) == (
        2003,
        "Can't connect to MySQL server on 'db' (Connection refused)",
    )
    unknown = aiomysql.OperationalError(2003, "Can't connect to MySQL server on 'nohost'")
    unknown.__cause__ = socket.gaierror(-2, "Name or service not known")
    assert driver._mysql_error(unknown) == (
        2003,
        "Can't connect to MySQL server on 'nohost' (Name or service not known)",
    )
    other = aiomysql.OperationalError(2003, "Can't connect")
    other.__cause__ = ValueError("odd")
    assert driver._mysql_error(other) == (2003, "Can't connect (odd)")
    assert driver._mysql_error(aiomysql.InterfaceError("Not connected")) == (None, "Not connected")


async def test_repository_read_errors_are_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    reader = driver.RepositoryReader(
        TARGET, namespace="phabricator", connect_timeout=0.05, query_timeout=0.05
    )
    assert reader.source == "db.example:3306"

    async def refused(_target: ConnectionTarget, _timeout: float) -> FakeConnection:
        raise aiomysql.OperationalError(2003, "Can't connect to MySQL server on 'db.example'")

    monkeypatch.setattr(driver, "_connect", refused)
    with pytest.raises(RepositoryReadError, match=r"^#2003 Can't connect"):
        await reader.read()

    async def hangs(_target: ConnectionTarget, _timeout: float) -> FakeConnection:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(driver, "_connect", hangs)
    with pytest.raises(RepositoryReadError, match=r"^timed out while connecting$"):
        await reader.read()

    async def resets(_target: ConnectionTarget, _timeout: float) -> FakeConnection:
        raise ConnectionResetError(104, "reset")

    monkeypatch.setattr(driver, "_connect", resets)
    with pytest.raises(RepositoryReadError, match=r"^ConnectionResetError"):
        await reader.read()


def test_text_conversion() -> None:
    assert driver._text(b"PHID-REPO-x") == "PHID-REPO-x"
    assert driver._text(None) == ""
    assert driver._text(7) == "7"
    assert driver._optional_text(None) is None
    assert driver._optional_text(bytearray(b"x")) == "x"


def test_its_errors_are_relay_errors() -> None:
    """The CLI and callers catch RelayError for anything relay raises on purpose."""
    assert issubclass(RepositoryReadError, RelayError)


async def test_a_server_that_never_greets_gets_its_connection_closed_at_the_timeout() -> None:
    # A real socket: the connect succeeds, the MySQL greeting never comes.
    accepted: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()
    server_ends: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_ends.append(writer)
        await accepted.put(reader)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    target = ConnectionTarget("127.0.0.1", port, "monitor", SecretStr("pw"))
    try:
        check = driver.DatabaseChecker(
            target, connect_timeout=0.2, query_timeout=0.2, clock=asyncio.get_running_loop().time
        )
        outcome = await check.check()
        assert outcome.error_message == "timed out after 0.2 s while connecting"
        reader = await asyncio.wait_for(accepted.get(), 1)
        # relay hung up when it gave up, rather than leaving the socket to the
        # garbage collector (an open connection on the server until then).
        assert await asyncio.wait_for(reader.read(), 1) == b""
    finally:
        for writer in server_ends:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_name_that_can_not_be_looked_up_reads_as_aiomysql_words_it() -> None:
    # A label longer than 63 characters fails in the IDNA codec, before any
    # query leaves the machine.
    name = "a" * 70 + ".example"
    target = ConnectionTarget(name, 3306, "monitor", SecretStr("pw"))
    check = driver.DatabaseChecker(
        target, connect_timeout=5, query_timeout=5, clock=asyncio.get_running_loop().time
    )
    outcome = await check.check()
    assert outcome.error_code == 2003
    assert outcome.error_message is not None
    assert outcome.error_message.startswith(f"Can't connect to MySQL server on '{name}' (")
