"""The replication verdict for one host, from one ``SHOW REPLICA STATUS`` row.

Pure. Follows Phorge's database console: a master must not replicate, a
replica must, a replica with no ``Seconds_Behind_Master`` is not replicating,
and one more than 30 seconds behind is slow ("data is at risk").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "SHOW_DELAY_AFTER_SECONDS",
    "SLOW_AFTER_SECONDS",
    "DelayBucket",
    "ReplicationStatus",
    "ReplicationVerdict",
    "delay_bucket",
    "replication_verdict",
]

ReplicationStatus = Literal[
    "okay", "master-replica", "replica-none", "not-replicating", "replica-slow"
]
DelayBucket = Literal["none", "current", "behind", "slow"]

#: A delay above this many seconds is worth showing.
SHOW_DELAY_AFTER_SECONDS = 1
#: A delay above this many seconds makes the replica ``replica-slow``.
SLOW_AFTER_SECONDS = 30

# MySQL 8.0.22+ answers SHOW REPLICA STATUS with "Source" column names;
# MariaDB and SHOW SLAVE STATUS keep the "Master" ones.
_MASTER_HOST_COLUMNS = ("Master_Host", "Source_Host")
_DELAY_COLUMNS = ("Seconds_Behind_Master", "Seconds_Behind_Source")
_IO_RUNNING_COLUMNS = ("Slave_IO_Running", "Replica_IO_Running")
_SQL_RUNNING_COLUMNS = ("Slave_SQL_Running", "Replica_SQL_Running")
_ERROR_COLUMNS = ("Last_SQL_Error", "Last_IO_Error")
# MariaDB and MySQL end the error of a failed statement with the statement
# itself ("... Default database: 'x'. Query: 'CREATE USER ... IDENTIFIED BY
# 'secret''"): passwords and row data that every subscriber would be sent.
_STATEMENT_MARKER = " Query: '"


@dataclass(frozen=True)
class ReplicationVerdict:
    """Replication status, delay in seconds (None when unknown) and a message."""

    status: ReplicationStatus
    delay: int | None = None
    message: str | None = None
    master_host: str | None = None


def replication_verdict(row: Mapping[str, Any] | None, *, is_master: bool) -> ReplicationVerdict:
    """Judge replication from the status query's row and the host's configured role.

    ``row`` is the single row of ``SHOW REPLICA STATUS`` (None when it
    returned nothing). Later checks override earlier ones exactly as in
    Phorge: a replicating master whose delay is unknown is reported
    ``not-replicating``, and one that is far behind ``replica-slow``.
    """
    is_replica = row is not None
    status: ReplicationStatus = "okay"
    message: str | None = None
    master_host = _column(row, _MASTER_HOST_COLUMNS) if row is not None else None
    if is_master and is_replica:
        status = "master-replica"
        message = f"configured as master, but replicating from {master_host or 'another host'}"
    elif not is_master and not is_replica:
        status = "replica-none"
        message = "configured as replica, but not replicating (SHOW REPLICA STATUS is empty)"
    if row is None:
        return ReplicationVerdict(status, None, message, None)

    delay = _parse_delay(_column(row, _DELAY_COLUMNS))
    if delay is None:
        return ReplicationVerdict(
            "not-replicating", None, _not_replicating_message(row), master_host
        )
    if delay > SLOW_AFTER_SECONDS:
        return ReplicationVerdict(
            "replica-slow",
            delay,
            f"{delay} s behind the master: data not yet replicated is at risk",
            master_host,
        )
    return ReplicationVerdict(status, delay, message, master_host)


def delay_bucket(delay: int | None) -> DelayBucket:
    """Coarse delay class for change detection: none, current, behind, slow."""
    if delay is None:
        return "none"
    if delay > SLOW_AFTER_SECONDS:
        return "slow"
    if delay > SHOW_DELAY_AFTER_SECONDS:
        return "behind"
    return "current"


def _column(row: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    """The first of ``names`` present in ``row``, as text (None if absent/NULL)."""
    for name in names:
        if name in row:
            value = row[name]
            if value is None:
                return None
            if isinstance(value, bytes | bytearray):
                return value.decode("utf-8", "replace")
            return str(value)
    return None


def _parse_delay(text: str | None) -> int | None:
    """Seconds behind as an int; None for NULL, empty or unparsable values."""
    if text is None or not text.strip():
        return None
    try:
        return int(float(text))
    except ValueError:
        return None


def _not_replicating_message(row: Mapping[str, Any]) -> str:
    """Explain a stopped replica with its thread states and last error."""
    io = _column(row, _IO_RUNNING_COLUMNS) or "?"
    sql = _column(row, _SQL_RUNNING_COLUMNS) or "?"
    message = f"replication is stopped (IO thread: {io}, SQL thread: {sql})"
    for name in _ERROR_COLUMNS:
        error = _column(row, (name,))
        if error:
            message += f"; {name}: {_without_statement(error)}"
            break
    return message


def _without_statement(error: str) -> str:
    """A replica's last error with the quoted statement left out (the cause stays)."""
    # The first marker: cutting too early hides more, never less.
    cut = error.find(_STATEMENT_MARKER)
    if cut < 0:
        return error
    return error[:cut] + " Query: (not shown)"
