"""What ``relay serve`` would refuse about a config file, checked without starting anything.

The config models judge the file alone. Starting also needs what the file
points at: listen addresses that resolve, TLS and CA files that load, the
shared secret, log files and the pidfile that can be written. ``check_config``
reports all of it in one run, so an operator fixes every problem in one pass
and ``check-config`` passing means ``serve`` will not refuse the file.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from relay.config import (
    AdminConfig,
    Config,
    LogConfig,
    PeerConfig,
    PeeringConfig,
    ServerConfig,
    parse_config,
    read_config_data,
)
from relay.config.secrets import load_secret
from relay.config.tls import server_context
from relay.errors import ConfigError, StartupError
from relay.peering.peers import peer_tls_context

Model = TypeVar("Model", bound=BaseModel)


def check_config(path: str | Path) -> Config:
    """Load the file at ``path`` and check everything ``serve`` needs of it.

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
    if isinstance(data, dict):
        problems += [f"{source}: {problem}" for problem in preflight(data)]
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def preflight(data: dict[str, Any]) -> list[str]:
    """What starting a node on the decoded config ``data`` would fail on.

    Each entry is judged on its own, so one broken entry does not hide the
    problems of the others; an entry the models refuse is skipped here (its
    problem is reported by ``parse_config``).
    """
    problems: list[str] = []
    for index, server in _each(ServerConfig, data.get("servers")):
        where = f"servers[{index}]"
        problems += _resolves(f"{where}.listen", server.listen)
        problems += _startup(server_context, server, where)
    for index, log in _each(LogConfig, data.get("logs")):
        problems += _writable(f"logs[{index}].path", "cannot open the log file", Path(log.path))
    pidfile = data.get("pidfile")
    if isinstance(pidfile, str) and pidfile:
        problems += _writable("pidfile", "cannot write", Path(pidfile))
    admin = _valid(AdminConfig, data.get("admin", {}))
    if admin is not None:
        problems += _startup(load_secret, admin)
    peering = _valid(PeeringConfig, data.get("peering", {})) or PeeringConfig()
    for index, peer in _each(PeerConfig, data.get("cluster")):
        problems += _startup(peer_tls_context, f"cluster[{index}]", peer, peering)
    return problems


def _resolves(where: str, host: str | None) -> list[str]:
    """A listen host name must resolve, as the listener resolves it when it binds."""
    if not host:
        return []
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return []
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return [f'{where}: cannot resolve "{host}" to an address to listen on: {exc.strerror}']
    return []


def _writable(where: str, doing: str, path: Path) -> list[str]:
    """Whether ``path`` can be written, its missing directories created, without doing either."""
    target = path if path.exists() else path.parent
    while not target.exists():
        target = target.parent
    if target == path:
        ok = path.is_file() and os.access(path, os.W_OK)
        reason = "not a writable file"
    else:
        ok = target.is_dir() and os.access(target, os.W_OK | os.X_OK)
        reason = f"{target} is not a writable directory"
    return [] if ok else [f"{where}: {doing} {path}: {reason}"]


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
