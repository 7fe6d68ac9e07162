"""The I/O edge: talk to MySQL/MariaDB with aiomysql, hand back plain data.

Two small classes, each bound to one server: ``DatabaseChecker`` runs
one health/replication check (connect, ``SHOW REPLICA STATUS``) and
``RepositoryReader`` reads Phorge's repository and Almanac rows. Every
network step is bounded by a timeout, and every connection is closed
before the call returns, even when it is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping
from typing import Any

import aiomysql  # type: ignore[import-untyped, import-not-found, unused-ignore]

from relay.cluster_status import resolve
from relay.cluster_status.errors import RepositoryReadError
from relay.cluster_status.verdicts.connection import CheckOutcome
from relay.cluster_status.verdicts.repository_rows import (
    CLUSTER_SERVICE_TYPE,
    BindingRow,
    ClusterRows,
    DeviceRow,
    PropertyRow,
    PushEventRow,
    RepositoryRow,
    ServiceRow,
    VersionRow,
)
from relay.config.cluster_status import ConnectionTarget

__all__ = ["DatabaseChecker", "RepositoryReader"]

# MySQL's ER_PARSE_ERROR: an old server that does not know SHOW REPLICA STATUS.
_PARSE_ERROR = 1064
# The client's CR_CONN_HOST_ERROR: no connection to that address.
_CANT_CONNECT = 2003
# Shown in the server's process list, so a DBA knows who is connecting.
_PROGRAM_NAME = "relay-cluster-status"
# How long a polite COM_QUIT may take before the socket is just closed.
_CLOSE_TIMEOUT = 1.0


class DatabaseChecker:
    """Checks one database host: connect, run the replica status query, close.

    Remembers when the server only understands ``SHOW SLAVE STATUS`` so
    later checks do not pay for the failed attempt again.
    """

    def __init__(
        self,
        target: ConnectionTarget,
        *,
        connect_timeout: float,
        query_timeout: float,
        clock: Callable[[], float],
    ) -> None:
        """Bind to ``target``; ``clock`` measures latency (monotonic seconds)."""
        self._target = target
        self._connect_timeout = connect_timeout
        self._query_timeout = query_timeout
        self._clock = clock
        self._legacy_syntax = False

    async def check(self) -> CheckOutcome:
        """Run one check and return what it observed; never raises for server trouble."""
        started = self._clock()
        phase = "connecting"
        conn: Any = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                conn = await _connect(self._target, self._connect_timeout)
            phase = "running SHOW REPLICA STATUS"
            async with asyncio.timeout(self._query_timeout):
                row = await self._replica_status(conn)
            return CheckOutcome(ran=True, latency=self._clock() - started, row=row)
        except TimeoutError:
            limit = self._connect_timeout if conn is None else self._query_timeout
            return CheckOutcome(
                ran=False,
                latency=self._clock() - started,
                error_message=f"timed out after {limit:g} s while {phase}",
            )
        except aiomysql.MySQLError as exc:
            code, message = _mysql_error(exc)
            return CheckOutcome(
                ran=False, latency=self._clock() - started, error_code=code, error_message=message
            )
        except OSError as exc:
            return CheckOutcome(
                ran=False,
                latency=self._clock() - started,
                error_message=f"{type(exc).__name__}: {exc}",
            )
        finally:
            if conn is not None:
                await _close(conn)

    async def _replica_status(self, conn: Any) -> Mapping[str, Any] | None:
        if not self._legacy_syntax:
            try:
                return await _fetch_one(conn, "SHOW REPLICA STATUS")
            except aiomysql.MySQLError as exc:
                if _mysql_error(exc)[0] != _PARSE_ERROR:
                    raise
                # MySQL before 8.0.22 and MariaDB before 10.5.1.
                self._legacy_syntax = True
        return await _fetch_one(conn, "SHOW SLAVE STATUS")


class RepositoryReader:
    """Reads the rows of Phorge's repository and Almanac tables from one server.

    All tables are read in one read-only transaction with a consistent
    snapshot, so versions, bindings and push events agree with each other.
    """

    def __init__(
        self,
        target: ConnectionTarget,
        *,
        namespace: str,
        connect_timeout: float,
        query_timeout: float,
    ) -> None:
        """Bind to ``target``, reading ``<namespace>_repository`` and ``<namespace>_almanac``."""
        self._target = target
        self._connect_timeout = connect_timeout
        self._query_timeout = query_timeout
        # The namespace was checked to be a plain identifier by the config.
        self._repo_db = f"`{namespace}_repository`"
        self._almanac_db = f"`{namespace}_almanac`"

    @property
    def source(self) -> str:
        """``host:port`` of the server read from."""
        return self._target.label

    async def read(self) -> ClusterRows:
        """Read every row the sync computation needs.

        Raises ``RepositoryReadError`` with a plain-words reason.
        """
        conn: Any = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                conn = await _connect(self._target, self._connect_timeout)
            async with asyncio.timeout(self._query_timeout):
                return await self._read_all(conn)
        except TimeoutError:
            phase = "connecting" if conn is None else "reading the tables"
            raise RepositoryReadError(f"timed out while {phase}") from None
        except aiomysql.MySQLError as exc:
            code, message = _mysql_error(exc)
            raise RepositoryReadError(f"#{code} {message}" if code else message) from None
        except OSError as exc:
            raise RepositoryReadError(f"{type(exc).__name__}: {exc}") from None
        finally:
            if conn is not None:
                await _close(conn)

    async def _read_all(self, conn: Any) -> ClusterRows:
        """Read every table the console reads, in one consistent snapshot."""
        queries = _cluster_queries(self._repo_db, self._almanac_db)
        # A snapshot is only consistent under REPEATABLE READ; on a server
        # configured READ-COMMITTED each query would see its own moment, and
        # a push between two of them made a leader's push event vanish
        # (a false "Unsynchronized"). This applies to the next transaction only.
        await _execute(conn, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        await _execute(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        rows = {name: await _fetch_all(conn, sql, args) for name, (sql, args) in queries.items()}
        await _execute(conn, "COMMIT")
        return _cluster_rows(rows)


#: One query: its SQL and its parameters (None: none).
Query = tuple[str, tuple[Any, ...] | None]


def _cluster_queries(repo: str, almanac: str) -> dict[str, Query]:
    """The queries of one read, by the ``ClusterRows`` field they fill, in the order they run."""
    cluster_service = (CLUSTER_SERVICE_TYPE,)
    return {
        "repositories": (
            f"SELECT id, phid, name, callsign, versionControlSystem, almanacServicePHID "
            f"FROM {repo}.repository "
            f"WHERE versionControlSystem = 'git' AND almanacServicePHID IS NOT NULL",
            None,
        ),
        "versions": (
            f"SELECT repositoryPHID, devicePHID, repositoryVersion, isWriting, "
            f"writeProperties, lockOwner FROM {repo}.repository_workingcopyversion",
            None,
        ),
        # Only the push events that some device's version points at.
        "push_events": (
            f"SELECT DISTINCT e.id, e.repositoryPHID, e.epoch "
            f"FROM {repo}.repository_pushevent e "
            f"JOIN {repo}.repository_workingcopyversion v "
            f"ON v.repositoryVersion = e.id AND v.repositoryPHID = e.repositoryPHID",
            None,
        ),
        "services": (
            f"SELECT phid, name, serviceType FROM {almanac}.almanac_service WHERE serviceType = %s",
            cluster_service,
        ),
        "bindings": (
            f"SELECT b.servicePHID, b.devicePHID, b.isDisabled "
            f"FROM {almanac}.almanac_binding b "
            f"JOIN {almanac}.almanac_service s ON s.phid = b.servicePHID "
            f"WHERE s.serviceType = %s",
            cluster_service,
        ),
        "devices": (
            f"SELECT DISTINCT d.phid, d.name FROM {almanac}.almanac_device d "
            f"JOIN {almanac}.almanac_binding b ON b.devicePHID = d.phid",
            None,
        ),
        "properties": (
            f"SELECT p.objectPHID, p.fieldName, p.fieldValue "
            f"FROM {almanac}.almanac_property p "
            f"JOIN {almanac}.almanac_service s ON s.phid = p.objectPHID "
            f"WHERE s.serviceType = %s AND p.fieldName = 'closed'",
            cluster_service,
        ),
    }


def _cluster_rows(rows: Mapping[str, list[Mapping[str, Any]]]) -> ClusterRows:
    """The typed rows of one read, from the dict rows of each query."""
    return ClusterRows(
        repositories=tuple(map(_repository_row, rows["repositories"])),
        versions=tuple(map(_version_row, rows["versions"])),
        push_events=tuple(map(_push_event_row, rows["push_events"])),
        services=tuple(map(_service_row, rows["services"])),
        bindings=tuple(map(_binding_row, rows["bindings"])),
        devices=tuple(
            DeviceRow(phid=_text(r["phid"]), name=_text(r["name"])) for r in rows["devices"]
        ),
        properties=tuple(map(_property_row, rows["properties"])),
    )


def _repository_row(r: Mapping[str, Any]) -> RepositoryRow:
    return RepositoryRow(
        id=int(r["id"]),
        phid=_text(r["phid"]),
        name=_text(r["name"]),
        callsign=_optional_text(r["callsign"]),
        vcs=_text(r["versionControlSystem"]),
        service_phid=_optional_text(r["almanacServicePHID"]),
    )


def _version_row(r: Mapping[str, Any]) -> VersionRow:
    return VersionRow(
        repository_phid=_text(r["repositoryPHID"]),
        device_phid=_text(r["devicePHID"]),
        version=int(r["repositoryVersion"]),
        is_writing=bool(r["isWriting"]),
        write_properties=_optional_text(r["writeProperties"]),
        lock_owner=_optional_text(r["lockOwner"]),
    )


def _push_event_row(r: Mapping[str, Any]) -> PushEventRow:
    return PushEventRow(
        id=int(r["id"]), repository_phid=_text(r["repositoryPHID"]), epoch=int(r["epoch"])
    )


def _service_row(r: Mapping[str, Any]) -> ServiceRow:
    return ServiceRow(
        phid=_text(r["phid"]), name=_text(r["name"]), service_type=_text(r["serviceType"])
    )


def _binding_row(r: Mapping[str, Any]) -> BindingRow:
    return BindingRow(
        service_phid=_text(r["servicePHID"]),
        device_phid=_text(r["devicePHID"]),
        disabled=bool(r["isDisabled"]),
    )


def _property_row(r: Mapping[str, Any]) -> PropertyRow:
    return PropertyRow(
        object_phid=_text(r["objectPHID"]),
        name=_text(r["fieldName"]),
        value=_optional_text(r["fieldValue"]),
    )


async def _connect(target: ConnectionTarget, connect_timeout: float) -> Any:
    """Open one autocommit connection (the password is read only here).

    The name is looked up by ``resolve`` (see there why not by asyncio),
    then its addresses are tried in turn, as asyncio would.
    """
    try:
        hosts = await resolve.addresses(target.host, target.port)
    except (OSError, UnicodeError) as exc:
        # Worded as aiomysql words a failed lookup, so it reads the same.
        raise aiomysql.OperationalError(_CANT_CONNECT, _cant_connect(target.host)) from exc
    refused: Exception | None = None
    for host in hosts:
        try:
            return await aiomysql.connect(
                host=host,
                port=target.port,
                user=target.user,
                password=_as_utf8_on_the_wire(target.password.get_secret_value()),
                connect_timeout=connect_timeout,
                autocommit=True,
                program_name=_PROGRAM_NAME,
            )
        except aiomysql.OperationalError as exc:
            if _mysql_error(exc)[0] != _CANT_CONNECT:
                raise
            refused = exc
    assert refused is not None  # getaddrinfo answers at least one address or raises
    # Named by the configured name, as before; the cause (the last address's) says why.
    raise aiomysql.OperationalError(_CANT_CONNECT, _cant_connect(target.host)) from (
        refused.__cause__
    )


def _cant_connect(host: str) -> str:
    """The words aiomysql uses for a host it could not connect to."""
    return f"Can't connect to MySQL server on {host!r}"


def _as_utf8_on_the_wire(password: str) -> str:
    """``password`` as aiomysql must be given it for its UTF-8 bytes to be sent.

    aiomysql encodes a password as Latin-1: a "€" raised an error naming the
    character and its position (a piece of the password) on every check, and
    an "é" went out as one byte where Phorge's PHP client, whose password the
    server's hash was made from, sends its two UTF-8 bytes. Decoded as
    Latin-1 here, the UTF-8 bytes are what aiomysql's encoding gives back.
    """
    return password.encode("utf-8").decode("latin-1")


async def _close(conn: Any) -> None:
    """Say goodbye (COM_QUIT) so the server logs no aborted connection, then close.

    Never raises (it runs in ``finally`` blocks), except for cancellation.
    """
    try:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await conn.ensure_closed()
    finally:
        # Also reached when the caller was cancelled mid-goodbye.
        conn.close()


async def _execute(conn: Any, sql: str) -> None:
    async with conn.cursor() as cursor:
        await cursor.execute(sql)


async def _fetch_one(conn: Any, sql: str) -> Mapping[str, Any] | None:
    async with conn.cursor(aiomysql.DictCursor) as cursor:
        await cursor.execute(sql)
        row = await cursor.fetchone()
    return dict(row) if row else None


async def _fetch_all(
    conn: Any, sql: str, args: tuple[Any, ...] | None = None
) -> list[Mapping[str, Any]]:
    async with conn.cursor(aiomysql.DictCursor) as cursor:
        await cursor.execute(sql, args)
        rows = await cursor.fetchall()
    return [dict(r) for r in rows]


def _mysql_error(exc: BaseException) -> tuple[int | None, str]:
    """The MySQL error number and text of a driver exception, with its cause."""
    args: tuple[Any, ...] = exc.args
    code = args[0] if args and isinstance(args[0], int) else None
    message = str(args[1]) if len(args) > 1 else str(exc)
    # "Can't connect" alone hides why; the OS error says refused, unreachable...
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.errno and cause.errno > 0:
        # asyncio's own wording ("Connect call failed (...)") says less.
        message = f"{message} ({os.strerror(cause.errno)})"
    elif isinstance(cause, OSError) and cause.strerror:
        # Resolver errors carry negative codes; their text is the reason.
        message = f"{message} ({cause.strerror})"
    elif cause is not None and str(cause):
        message = f"{message} ({cause})"
    return (code or None), message


def _text(value: Any) -> str:
    # PHIDs are VARBINARY columns, which the driver hands back as bytes.
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)
