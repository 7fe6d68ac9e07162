"""Notifications as application servers and peers post them: parse, check, encode.

A notification is a JSON object with at least ``subscribers`` (a list of
keys). relay keeps every field it does not use, so browsers get exactly what
Phorge posted, plus the ``touched`` list of the nodes it passed through (and a
``uniqueID`` when an application posted none, see ``Notification.identified``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict, TypeGuard

import orjson

from relay.config import LimitsConfig
from relay.core.envelope import new_unique_id
from relay.errors import NotificationError

#: Deepest nesting of arrays and objects a body may have, the body itself being level 1.
#: orjson parses 1,024 levels but encodes only 254, and relay encodes every body
#: again (stamped for browsers and peers); no real notification comes near either.
MAX_DEPTH = 128


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

    def identified(self, new_id: Callable[[], str] | None = None) -> Notification:
        """This notification, given a ``uniqueID`` of ``new_id()`` if an application posted none.

        Without one, two identical posts would look like two copies of one
        message and the second would be dropped as a duplicate, where Aphlict
        delivers every post. The node that takes the post from the
        application names it, so that the copies it forwards (through relay
        and Aphlict peers alike, which pass the field on) still de-duplicate.
        A copy from a peer (``touched`` not empty) is never renamed, and a
        ``uniqueID`` the application did give is kept as it is.
        """
        if self.touched or self.body.get("uniqueID") not in (None, ""):
            return self
        unique_id = (new_id or new_unique_id)()
        return Notification({**self.body, "uniqueID": unique_id}, self.subscribers, self.touched)

    def stamped(self, fingerprint: str) -> bytes:
        """The body with ``fingerprint`` appended to ``touched``, encoded once for everyone."""
        body = dict(self.body)
        body["touched"] = [*self.touched, fingerprint]
        return orjson.dumps(body)


class Bounds(TypedDict):
    """The bounds a received message is parsed under (keyword arguments of the parsers)."""

    max_subscribers: int
    max_touched: int


def bounds_of(limits: LimitsConfig) -> Bounds:
    """The configured bounds (``limits``) for ``parse_notification`` and the batch decoder.

    Whatever brings a message in (a POST, a peer's batch, the broker) parses
    it under these, so a message is held to the same limits on every path.
    """
    return {"max_subscribers": limits.max_subscribers, "max_touched": limits.max_touched}


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
    return check_notification(
        body, raw=raw, max_subscribers=max_subscribers, max_touched=max_touched
    )


def check_notification(
    body: object,
    *,
    raw: bytes | None = None,
    max_subscribers: int = 10_000,
    max_touched: int = 64,
) -> Notification:
    """Check one decoded notification (a POST body, or one message of a peer's batch).

    ``raw`` is the text it was decoded from, when it came alone: it lets a
    body too shallow to matter skip the depth walk.

    Raises:
        NotificationError: with a message fit for the HTTP 400 response.
    """
    if not isinstance(body, dict):
        raise NotificationError("the body must be a JSON object")
    if _too_deep(raw, body):
        raise NotificationError(f"the body nests arrays and objects more than {MAX_DEPTH} deep")
    if "subscribers" not in body:
        raise NotificationError('"subscribers" is missing: list the keys to notify')
    subscribers = body["subscribers"]
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


def _too_deep(raw: bytes | None, body: dict[str, Any]) -> bool:
    """Whether ``body`` (decoded from ``raw``, when known) nests deeper than ``MAX_DEPTH``."""
    # Counting brackets in C is cheap, and a body with fewer opening brackets
    # than the limit cannot nest that deep: only suspicious bodies are walked.
    if raw is not None and raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    level: list[tuple[Any, int]] = [(body, 1)]
    while level:
        value, depth = level.pop()
        if depth > MAX_DEPTH:
            return True
        children = value.values() if isinstance(value, dict) else value
        level.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _is_string_list(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
