"""The outcome of one database check, and the connection status it yields.

Pure: the driver fills in a ``CheckOutcome``; this module decides which
of Phorge's connection statuses it means (``okay``, ``fail``, ``auth``,
``replication-client``) using the same MySQL error codes Phorge maps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "AUTH_ERROR_CODES",
    "PRIVILEGE_ERROR_CODES",
    "CheckOutcome",
    "ConnectionStatus",
    "ConnectionVerdict",
    "connection_verdict",
    "is_reachable",
]

ConnectionStatus = Literal["okay", "fail", "auth", "replication-client"]

#: The server refused the credentials. 1045 is "Access denied for user";
#: 1698 is the same refusal from socket-style auth plugins.
AUTH_ERROR_CODES = frozenset({1045, 1698})

#: Logged in, but not allowed to run the status query. 1227 is what MySQL
#: and MariaDB 10.11 return for ``SHOW REPLICA STATUS`` without the
#: privilege; 1044/1142/1143 are the other "access denied" codes Phorge
#: treats the same way.
PRIVILEGE_ERROR_CODES = frozenset({1044, 1142, 1143, 1227})

_PRIVILEGE_HINT = (
    "no permission to run SHOW REPLICA STATUS: grant this user REPLICATION CLIENT "
    "(MySQL) or SLAVE MONITOR (MariaDB 10.5.9 and later, where REPLICATION CLIENT "
    "no longer covers it) so replication can be monitored"
)


@dataclass(frozen=True)
class CheckOutcome:
    """What one check of one host observed.

    ``ran`` is True when the status query ran; ``row`` is then its single
    result row (None when the server is not replicating). Otherwise
    ``error_code`` holds the MySQL error number when there was one (None for
    timeouts and other non-MySQL failures) and ``error_message`` a short
    description with no secret in it. ``latency`` is in seconds.
    """

    ran: bool
    latency: float
    row: Mapping[str, Any] | None = None
    error_code: int | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class ConnectionVerdict:
    """A connection status and the message that explains it, if any."""

    status: ConnectionStatus
    message: str | None = None


def connection_verdict(outcome: CheckOutcome) -> ConnectionVerdict:
    """Map a check outcome to Phorge's connection status.

    Takes the outcome of one check; returns the status with a message (the
    server's error text, or a hint on what privilege to grant).
    """
    if outcome.ran:
        return ConnectionVerdict("okay")
    code = outcome.error_code
    detail = outcome.error_message or "unknown error"
    if code in AUTH_ERROR_CODES:
        return ConnectionVerdict("auth", f"#{code} {detail}")
    if code in PRIVILEGE_ERROR_CODES:
        return ConnectionVerdict("replication-client", f"{_PRIVILEGE_HINT} (#{code} {detail})")
    if code is not None:
        return ConnectionVerdict("fail", f"#{code} {detail}")
    return ConnectionVerdict("fail", detail)


def is_reachable(status: ConnectionStatus) -> bool:
    """Whether a check with this status counts as a success for health.

    The contract (shared/spec/cluster-status.md) is explicit: a check
    succeeds when the connection status is ``okay``. A monitoring user
    without the replication privilege therefore counts as failing, which
    the README says loudly: grant it (``SLAVE MONITOR`` on MariaDB 10.5+,
    ``REPLICATION CLIENT`` on MySQL).
    """
    return status == "okay"
