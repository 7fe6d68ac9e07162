"""The open-files limit: every browser is a descriptor, so a node takes the most it may have.

Outside systemd (whose unit sets ``LimitNOFILE``) a process starts with the
shell's soft limit, often 1,024, and would stop accepting there with memory
to spare. The soft limit may be raised up to the hard one without privileges,
so relay raises it at start, once, and checks that the connection cap the
config asks for fits under it.
"""

from __future__ import annotations

import logging
import resource

from relay.config import LimitsConfig
from relay.errors import StartupError

log = logging.getLogger("relay.process")

#: Descriptors kept for everything but browsers: listeners, the event loop, log files,
#: the pidfile, peer and broker links, application servers' admin connections.
RESERVED = 256

_UNLIMITED = resource.RLIM_INFINITY


def raise_open_files_limit(limits: LimitsConfig, *, source: str | None = None) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the limit now in force.

    Logs the limit once, at INFO. ``source`` (the config file) starts the
    error's message.

    Raises:
        StartupError: ``limits.max_connections`` was set in the config and does
            not fit under the hard limit with ``RESERVED`` descriptors to spare.
    """
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = _raise_soft_limit(before, hard, limits.max_connections + RESERVED)
    if before == soft:
        what = f"open files: the limit is {_count(soft)}"
    else:
        what = f"open files: raised the soft limit from {before} to {_count(soft)}" + (
            " (the hard limit)" if soft == hard else ""
        )
    if (problem := _cap_problem(limits, soft, hard, source)) is not None:
        raise StartupError(problem)
    room = _room(soft)
    if room is None or limits.max_connections <= room:
        log.info("%s", what)
        return soft
    # The default cap, not the operator's word: say what this machine allows instead.
    log.info(
        "%s: room for about %d browsers (limits.max_connections is %d by default; set it "
        "to %d or less so that further browsers get 503)",
        what,
        room,
        limits.max_connections,
        room,
    )
    return soft


def open_files_problem(limits: LimitsConfig, *, source: str | None = None) -> str | None:
    """Why ``raise_open_files_limit`` would refuse ``limits`` in this process; None if not.

    Changes nothing (check-config's question: serve raises the limit itself,
    and says so).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raised = _raised(soft, hard, limits.max_connections + RESERVED)
    return _cap_problem(limits, raised, hard, source)


def _cap_problem(limits: LimitsConfig, soft: int, hard: int, source: str | None) -> str | None:
    """Why the configured connection cap does not fit under ``soft``; None if it does.

    The default cap is no problem: the operator did not ask for it.
    """
    room = _room(soft)
    if room is None or limits.max_connections <= room:
        return None
    if "max_connections" not in limits.model_fields_set:
        return None
    where = f"{source}: " if source else ""
    return (
        f"{where}limits.max_connections is {limits.max_connections}, but this process may "
        f"open only {soft} files (RLIMIT_NOFILE, hard limit {_count(hard)}) and relay "
        f"keeps {RESERVED} of them for listeners, logs, peers and admin connections: "
        f"lower limits.max_connections to {room} or less, or raise the hard limit "
        "(LimitNOFILE= in the systemd unit, nofile in /etc/security/limits.conf)"
    )


def _room(soft: int) -> int | None:
    """Browsers that fit under the soft limit ``soft``, ``RESERVED`` aside (None: no limit)."""
    return None if soft == _UNLIMITED else max(soft - RESERVED, 0)


def _raised(soft: int, hard: int, needed: int) -> int:
    """The soft limit ``soft`` raised to ``hard`` (to ``needed`` if hard is unlimited)."""
    if soft == _UNLIMITED:
        return soft
    # An unlimited soft limit is refused on some systems (macOS): ask for what is needed.
    return max(soft, needed if hard == _UNLIMITED else hard)


def _raise_soft_limit(soft: int, hard: int, needed: int) -> int:
    """Raise ``soft`` as ``_raised`` says; return the soft limit in force."""
    wanted = _raised(soft, hard, needed)
    if wanted == soft:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (OSError, ValueError) as exc:
        log.warning("open files: could not raise the soft limit %d to %d: %s", soft, wanted, exc)
        return soft
    return wanted


def _count(limit: int) -> str:
    return "unlimited" if limit == _UNLIMITED else str(limit)
