"""What browsers send: ``{"command": C, "data": D}`` text frames, parsed into commands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from relay.errors import CommandError

#: How far back ``replay`` looks when the browser does not say (ms).
DEFAULT_REPLAY_AGE_MS = 60_000

#: The answer to a browser's ``ping``.
PONG = orjson.dumps({"type": "pong"})


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Add these keys to the connection's subscriptions."""

    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Remove these keys from the connection's subscriptions."""

    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Replay:
    """Send retained messages of the last ``age_ms`` that match the subscriptions."""

    age_ms: float


@dataclass(frozen=True, slots=True)
class Ping:
    """Answer with a pong."""


Command = Subscribe | Unsubscribe | Replay | Ping


def parse_command(text: bytes | str) -> Command:
    """Parse one text frame.

    Raises:
        CommandError: the frame is not JSON, names no known command, or its
            ``data`` has the wrong shape; the message says which.
    """
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CommandError(f"not valid JSON: {exc.msg}") from None
    if not isinstance(frame, dict):
        raise CommandError("a command must be a JSON object")
    command = frame.get("command")
    data = frame.get("data")
    if command in ("subscribe", "unsubscribe"):
        keys = _keys(command, data)
        return Subscribe(keys) if command == "subscribe" else Unsubscribe(keys)
    if command == "replay":
        return Replay(_replay_age(data))
    if command == "ping":
        return Ping()
    raise CommandError(f"unknown command {_short(command)}")


def _keys(command: str, data: Any) -> tuple[str, ...]:
    if not isinstance(data, list) or not all(isinstance(key, str) for key in data):
        raise CommandError(f'"{command}" needs "data" to be a list of strings')
    return tuple(data)


def _replay_age(data: Any) -> float:
    if data is None:
        return DEFAULT_REPLAY_AGE_MS
    if not isinstance(data, dict):
        raise CommandError('"replay" needs "data" to be an object like {"age": 60000}')
    age = data.get("age", DEFAULT_REPLAY_AGE_MS)
    if isinstance(age, bool) or not isinstance(age, int | float) or age < 0:
        raise CommandError('"replay" needs "age" to be a number of milliseconds, 0 or more')
    return float(age)


def _short(value: Any) -> str:
    """``value`` as at most 40 characters of JSON, to name it in an error."""
    if value is None:
        return "(none)"
    try:
        return orjson.dumps(value).decode()[:40]
    except orjson.JSONEncodeError:
        # orjson reads nesting up to 1,024 levels deep but writes only 254: a
        # browser can send a command that cannot be written back.
        kind = "an array" if isinstance(value, list) else "an object"
        return f"({kind} nested too deep to show)"
