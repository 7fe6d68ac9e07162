"""Notifications as application servers and peers post them: parse, check, encode.

A notification is a JSON object with at least ``subscribers`` (a list of
keys). relay keeps every field it does not use, so browsers get exactly what
Phorge posted, plus the ``touched`` list of the nodes it passed through.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from relay.errors import NotificationError

DEFAULT_INSTANCE = "default"


@dataclass(frozen=True, slots=True)
class Notification:
    """A checked notification: its decoded body and the fields relay routes on."""

    body: dict[str, Any]
    subscribers: frozenset[str]
    touched: tuple[str, ...]

    def identity(self) -> str:
        """What makes two arrivals the same message: ``uniqueID``, else a digest.

        The digest leaves out ``touched``, which grows at every hop, so copies
        of one message that took different paths through a cluster agree.
        """
        unique_id = self.body.get("uniqueID")
        if isinstance(unique_id, str) and unique_id:
            return "id:" + unique_id
        stable = {name: value for name, value in self.body.items() if name != "touched"}
        digest = hashlib.blake2b(orjson.dumps(stable, option=orjson.OPT_SORT_KEYS), digest_size=16)
        return "digest:" + digest.hexdigest()

    def stamped(self, fingerprint: str) -> bytes:
        """The body with ``fingerprint`` appended to ``touched``, encoded once for everyone."""
        body = dict(self.body)
        body["touched"] = [*self.touched, fingerprint]
        return orjson.dumps(body)


def parse_notification(
    raw: bytes, *, max_subscribers: int = 10_000, max_touched: int = 64
) -> Notification:
    """Decode and check one POST body, bounding its ``subscribers`` and ``touched`` lists.

    Raises:
        NotificationError: with a message fit for the HTTP 400 response.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise NotificationError(f"the body is not valid JSON: {exc.msg}") from None
    if not isinstance(body, dict):
        raise NotificationError("the body must be a JSON object")
    subscribers = body.get("subscribers")
    if not _is_string_list(subscribers):
        raise NotificationError('"subscribers" must be a list of strings')
    if len(subscribers) > max_subscribers:
        raise NotificationError(
            f'"subscribers" lists {len(subscribers)} keys; the limit is {max_subscribers}'
        )
    touched = body.get("touched", [])
    if not _is_string_list(touched):
        raise NotificationError('"touched" must be a list of strings when present')
    if len(touched) > max_touched:
        raise NotificationError(f'"touched" lists {len(touched)} nodes; the limit is {max_touched}')
    return Notification(body, frozenset(subscribers), tuple(touched))


def instance_from_query(value: str | None) -> str:
    """The instance an admin request names with ``?instance=``; empty means default."""
    return value or DEFAULT_INSTANCE


def _is_string_list(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
