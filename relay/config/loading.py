"""Loading the config file: JSON in, frozen models out, every problem in plain words.

Each problem found is reported with the file, the entry index and the field,
in the order of the file; rules that span entries (one port used twice, a
peer listed twice, workers without a broker) are checked beside the models'
own, so that one run names them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import orjson
from pydantic import ValidationError

from relay.config.models import Config
from relay.config.problems import describe_error
from relay.errors import ConfigError


def load_config(path: str | Path) -> Config:
    """Read and validate the config file at ``path``.

    Raises:
        ConfigError: listing every problem found, each naming the file.
    """
    return parse_config(read_config_data(path), str(path))


def read_config_data(path: str | Path) -> object:
    """The decoded JSON of the config file at ``path``, not yet validated.

    Raises:
        ConfigError: the file cannot be read or is not JSON; names the file.
    """
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read the file: {exc.strerror}"]) from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(
            [f"{source}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"]
        ) from None
    return data


def parse_config(data: object, source: str = "<config>") -> Config:
    """Validate already-decoded JSON ``data``; ``source`` names it in errors.

    Raises:
        ConfigError: listing every problem found, in the order of the file.
    """
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the file must hold a JSON object at the top level"])
    # Rules spanning entries are checked on the file's data, so that they are
    # reported along with the problems of single entries, not after those are fixed.
    found = _cross_entry_problems(data)
    config = None
    try:
        # JSON mode: strict about types, yet lists may fill tuples and objects
        # may fill nested models, exactly as they arrive from the file.
        config = Config.model_validate_json(orjson.dumps(data))
    except ValidationError as exc:
        found += [(error["loc"], describe_error(error, Config)) for error in exc.errors()]
    if found:
        order = {key: index for index, key in enumerate(data)}
        found.sort(key=lambda problem: _file_position(problem[0], order))
        raise ConfigError([f"{source}: {problem}" for _, problem in found])
    assert config is not None
    return config


Located = tuple[tuple[int | str, ...], str]


def _file_position(loc: Sequence[int | str], order: dict[str, int]) -> tuple[int, int]:
    """Where a problem sits in the file: its top-level key, then its entry's index."""
    key = order.get(str(loc[0]), len(order)) if loc else -1
    entry = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else -1
    return key, entry


def _cross_entry_problems(data: dict[str, Any]) -> list[Located]:
    """Rules that span entries, which no single model can check.

    They read the file's data as it is, leniently: an entry too broken to
    judge is skipped here (its own problem is reported by the models).
    """
    return [
        *_missing_servers(data),
        *_workers_without_broker(data),
        *_ports_used_twice(data),
        *_peers_listed_twice(data),
    ]


def _missing_servers(data: dict[str, Any]) -> list[Located]:
    """No servers at all, or no client or no admin server among them."""
    if isinstance(data.get("servers"), list) and not data["servers"]:
        return [
            (("servers",), "servers: no servers are configured; relay needs a client and an admin")
        ]
    servers = _entries(data.get("servers"))
    # An entry with a wrong type is the models' to report; judging the kinds
    # then would report the same slip twice ("no admin server" for "admni").
    if not servers or not all(entry.get("type") in ("client", "admin") for _, entry in servers):
        return []
    kinds = {entry["type"] for _, entry in servers}
    return [
        (("servers",), f'servers: no "{kind}" server is configured; {users} need one to connect')
        for kind, users in (("client", "browsers"), ("admin", "application servers"))
        if kind not in kinds
    ]


def _workers_without_broker(data: dict[str, Any]) -> list[Located]:
    """More than one worker with no broker to meet through."""
    workers = data.get("workers")
    if _is_int(workers) and workers > 1 and data.get("broker") is None:
        return [(("workers",), f"workers: {_needs_a_broker(workers)}")]
    return []


def _ports_used_twice(data: dict[str, Any]) -> list[Located]:
    """Two servers on one port (port 0, the OS's pick, may repeat)."""
    ports = [(index, entry.get("port")) for index, entry in _entries(data.get("servers"))]
    return _duplicates(
        ((index, port) for index, port in ports if _is_int(port) and port),
        lambda index, first, port: (
            ("servers", index, "port"),
            f"servers[{index}].port: port {port} is already used by servers[{first}]",
        ),
    )


def _peers_listed_twice(data: dict[str, Any]) -> list[Located]:
    """One peer address twice in ``cluster``, whatever the protocol."""
    peers = [
        (index, f"{entry['host']}:{entry['port']}")
        for index, entry in _entries(data.get("cluster"))
        if isinstance(entry.get("host"), str) and _is_int(entry.get("port"))
    ]
    return _duplicates(
        peers,
        lambda index, first, address: (
            ("cluster", index),
            f"cluster[{index}]: peer {address} is listed twice (also at cluster[{first}])",
        ),
    )


def _entries(section: object) -> list[tuple[int, dict[str, Any]]]:
    """The objects of a list section, with their indexes; nothing if it is not a list."""
    if not isinstance(section, list):
        return []
    return [(index, entry) for index, entry in enumerate(section) if isinstance(entry, dict)]


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def workers_without_broker(config: Config, count: int) -> str | None:
    """Why ``count`` workers cannot serve ``config``, or None when they can."""
    if count <= 1 or config.broker is not None:
        return None
    return _needs_a_broker(count)


def _needs_a_broker(count: int) -> str:
    # Workers meet through the broker: without one, a post reaching one
    # worker would never reach the browsers of the others.
    return (
        f'{count} workers need a "broker" section: workers meet through the broker, '
        "without one a post would reach only the browsers of the worker it arrived at"
    )


def _duplicates(items: Iterable[tuple[int, Any]], describe: Any) -> list[Any]:
    """One problem per item whose value an earlier item already had."""
    first_seen: dict[Any, int] = {}
    problems = []
    for index, value in items:
        if value in first_seen:
            problems.append(describe(index, first_seen[value], value))
        else:
            first_seen[value] = index
    return problems
