"""What ``relay serve`` would refuse about a config file, checked without starting anything.

The config models judge the file alone. Starting also needs what the file
points at: listen addresses the machine has (resolved and bound, then let go
at once), TLS and CA files that load, the shared secret, log files and the
pidfile that can be written (tried, and undone). ``check_config`` reports all
of it in one run, so an operator fixes every problem in one pass. ``relay
serve`` runs the same ``check_config`` before it starts, so check-config
passing means serve will not refuse the file, and both say it in the same
words. A port another process holds is only a warning here: check-config
usually runs beside the live node, which holds its own ports; so is a pidfile
that names a live relay.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from relay.config import (
    AdminConfig,
    Config,
    LimitsConfig,
    LogConfig,
    PeerConfig,
    PeeringConfig,
    ServerConfig,
    parse_config,
    read_config_data,
)
from relay.config.broker import BrokerConfig
from relay.config.secrets import load_secret
from relay.config.tls import client_context, peer_tls_context, server_context
from relay.errors import ConfigError, StartupError
from relay.process.binding import IN_USE, listen_problem, probe_bind
from relay.process.open_files import open_files_problem
from relay.process.pidfile import PidFile

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class Checked:
    """A config file that serve would start on, and what is worth a look all the same."""

    config: Config
    #: Lines naming the file and the field, e.g. a port another process holds now.
    warnings: list[str] = field(default_factory=list)


@dataclass
class Findings:
    """What the checks of the things a config file points at found."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Listeners whose port another process holds: warnings, unless the ports are
    #: that process' to pass over (``serve --take-over``).
    held_ports: list[str] = field(default_factory=list)
    #: A pidfile naming a live relay: a warning, unless that relay may be the one
    #: taken over (``serve --take-over`` checks it is, once connected to it).
    held_pidfile: list[str] = field(default_factory=list)


def check_config(path: str | Path, *, taking_over: bool = False) -> Checked:
    """Load the file at ``path`` and check everything ``serve`` needs of it.

    ``taking_over``: the ports come from the process handing over, which
    holds them now, and so may the pidfile: that they are held is no warning.

    Raises:
        ConfigError: every problem found, in the file and in what it points
            at, each naming the file, the entry and the field.
    """
    source = str(path)
    data = read_config_data(path)
    problems: list[str] = []
    config = None
    try:
        config = parse_config(data, source)
    except ConfigError as exc:
        problems += exc.problems
    found = Findings()
    if isinstance(data, dict):
        found = inspect(data)
        problems += [f"{source}: {problem}" for problem in found.problems]
    if problems:
        raise ConfigError(problems)
    assert config is not None
    held = [] if taking_over else [*found.held_ports, *found.held_pidfile]
    warnings = [*held, *found.warnings]
    return Checked(config, [f"{source}: {warning}" for warning in warnings])


def preflight(data: dict[str, Any]) -> list[str]:
    """What starting a node on the decoded config ``data`` would fail on (warnings aside)."""
    return inspect(data).problems


def inspect(data: dict[str, Any]) -> Findings:
    """What starting a node on the decoded config ``data`` would fail on, and warnings.

    Each entry is judged on its own, so one broken entry does not hide the
    problems of the others; an entry the models refuse is skipped here (its
    problem is reported by ``parse_config``).
    """
    found = Findings()
    problems = found.problems
    for index, server in _each(ServerConfig, data.get("servers")):
        where = f"servers[{index}]"
        _probe_listener(found, where, server)
        problems += _startup(server_context, server, where)
    for index, log in _each(LogConfig, data.get("logs")):
        problems += _writable(f"logs[{index}].path", "cannot open the log file", Path(log.path))
    pidfile = data.get("pidfile")
    if isinstance(pidfile, str) and pidfile:
        problems += _writable("pidfile", "cannot write", Path(pidfile))
        if (running := PidFile(pidfile).running_node()) is not None:
            # A warning, as a held port is: check-config usually runs beside that very node.
            found.held_pidfile.append(f"{running}; serve cannot start while it runs")
    admin = _valid(AdminConfig, data.get("admin", {}))
    if admin is not None:
        problems += _startup(load_secret, admin)
    peering = _valid(PeeringConfig, data.get("peering", {})) or PeeringConfig()
    for index, peer in _each(PeerConfig, data.get("cluster")):
        problems += _startup(peer_tls_context, f"cluster[{index}]", peer, peering)
    broker = _valid(BrokerConfig, data.get("broker")) if data.get("broker") is not None else None
    if broker is not None:
        problems += _redis_url(broker)
        if broker.ca_file is not None:
            problems += _startup(client_context, "broker.ca_file", broker.ca_file)
    limits = _valid(LimitsConfig, data.get("limits", {}))
    if limits is not None and (problem := open_files_problem(limits)) is not None:
        # A warning: the limit is this process' own, and a service's may differ.
        found.warnings.append(
            f"{problem}; serve started as this command was would refuse to start (under "
            "systemd, the unit's LimitNOFILE= sets the limit)"
        )
    return found


#: What ``_redis_url`` runs in a child process: redis-py's word on a URL, or nothing.
_ASK_REDIS_PY = """
import sys
from redis.asyncio import ConnectionPool
try:
    ConnectionPool.from_url(sys.argv[1])
except ValueError as exc:
    print(exc)
"""


def _redis_url(broker: BrokerConfig) -> list[str]:
    """The broker URL as redis-py will read it when the node connects (its query options too).

    redis-py is asked in a child process unless this one has loaded it: loading
    it takes ~10 MiB that a process keeps for life, and the supervisor of a
    ``--workers`` node (which runs this check) never talks to Redis itself.
    """
    if "redis" in sys.modules:
        from redis.asyncio import ConnectionPool

        try:
            ConnectionPool.from_url(broker.url)
        except ValueError as exc:
            return [f"broker.url: redis-py cannot use it: {exc}"]
        return []
    # The URL holds no password (the config refuses one there), so it may be an argument.
    asked = subprocess.run(
        [sys.executable, "-c", _ASK_REDIS_PY, broker.url],
        capture_output=True,
        text=True,
        check=True,
    )
    problem = asked.stdout.strip()
    return [f"broker.url: redis-py cannot use it: {problem}"] if problem else []


def _probe_listener(found: Findings, where: str, server: ServerConfig) -> None:
    """Resolve and bind what the listener would, as serve does; a port in use is a warning."""
    try:
        probe_bind(server)
    except OSError as exc:
        line = listen_problem(where, server, exc)
        if exc.errno == IN_USE:
            found.held_ports.append(f"{line}; serve cannot start until it is free")
        else:
            found.problems.append(line)


def _writable(where: str, doing: str, path: Path) -> list[str]:
    """Whether ``path`` can be written, its missing directories created, as serve will.

    Judged first on what the file system says (a directory where a file
    should be, a file where a directory should be, modes), then tried: the
    missing directories made and the file opened for appending, and all of
    it undone, since modes do not tell everything (root, read-only mounts,
    /proc and the like). A symbolic link is judged by where it leads, which
    is what serve writes, and stays as it is; a device or a pipe (a log on
    /dev/stdout) by its mode alone, as opening one may wait for a reader.
    """
    shown, path = path, Path(os.path.realpath(path))
    target = path if path.exists() else path.parent
    while not target.exists():
        target = target.parent
    if target == path and (path.is_char_device() or path.is_fifo()):
        ok = os.access(path, os.W_OK)
        return [] if ok else [f"{where}: {doing} {shown}: not writable"]
    if target == path:
        ok = path.is_file() and os.access(path, os.W_OK)
        reason = "not a writable file"
    else:
        ok = target.is_dir() and os.access(target, os.W_OK | os.X_OK)
        reason = f"{target} is not a writable directory"
    if ok:
        failure = _try_writing(path)
        ok, reason = failure is None, failure or ""
    return [] if ok else [f"{where}: {doing} {shown}: {reason}"]


def _try_writing(path: Path) -> str | None:
    """Create ``path`` (and its missing directories) or open it to append, then undo that.

    Returns the OS's reason when that fails, None when it works. An existing
    file is opened for appending only: nothing of it changes.
    """
    made: list[Path] = []
    try:
        for directory in reversed(path.parents):
            if not directory.exists():
                directory.mkdir()
                made.append(directory)
        existed = path.exists()
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
        if not existed:
            path.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        for directory in reversed(made):
            directory.rmdir()
    return None


def _startup(check: Callable[..., object], *args: Any) -> list[str]:
    """Run one of the checks a starting node runs; its StartupError is a problem."""
    try:
        check(*args)
    except StartupError as exc:
        return [str(exc)]
    return []


def _each(model: type[Model], section: object) -> list[tuple[int, Model]]:
    """The entries of a list section that ``model`` accepts, with their indexes."""
    if not isinstance(section, list):
        return []
    entries = ((index, _valid(model, entry)) for index, entry in enumerate(section))
    return [(index, entry) for index, entry in entries if entry is not None]


def _valid(model: type[Model], value: object) -> Model | None:
    try:
        return model.model_validate_json(orjson.dumps(value))
    except ValidationError:
        return None
