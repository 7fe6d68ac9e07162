"""What the cluster-status lease keeps in Redis: key names, scripts, and the verdict format.

Pure; no I/O. Under the broker's prefix:

- ``<prefix>:cluster-status:lease``: the lease, ``<fingerprint>:<token>`` of
  its holder, set ``NX PX ttl`` and extended by its holder only;
- ``<prefix>:cluster-status:token``: the counter fencing tokens come from;
- ``<prefix>:cluster-status:verdicts``: a hash of the last verdict of each
  kind (field: the message type), where a node starting or taking over
  reads what was published;
- ``<prefix>:cluster-status``: the channel each verdict is published on.

A verdict is JSON: ``{"token": 7, "seq": 3, "digest": "...", "message":
{...}}``, the message exactly as browsers get it; ``(token, seq)`` orders the
verdicts of one kind, so a copy arriving late (the channel and a read-back
race) is never taken for news. Every write of the holder goes through a
script that first checks the lease is still its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "RELEASE_SCRIPT",
    "RENEW_SCRIPT",
    "TAKE_SCRIPT",
    "VERDICT_SCRIPT",
    "LeaseKeys",
    "SharedVerdict",
    "decode_verdict",
    "holder_value",
]

#: KEYS: lease, token counter; ARGV: fingerprint, ttl ms. Returns the new
#: token, or 0 when another node holds the lease. The token is drawn only
#: when the lease is free, so tokens do not grow with every attempt.
#:
#: A missing counter starts from Redis' clock in milliseconds, not from 0: a
#: Redis without persistence comes back empty after a restart, and every
#: node ignores verdicts whose token is below the largest it has seen, so a
#: counter counting from 1 again would silence the cluster's status until
#: every node restarted. The old counter grew by one per take, far fewer than
#: one per millisecond (a take needs the lease free), so it stayed below the
#: clock it started from; the new one starts above it.
TAKE_SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if redis.call('EXISTS', KEYS[2]) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', KEYS[2], t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000)))
  end
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
  return token
end
return 0
"""

#: KEYS: lease; ARGV: holder (``fingerprint:token``), ttl ms. Compare and
#: extend: 1 if the lease was still this holder's, else 0.
RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

#: KEYS: lease; ARGV: holder. Compare and delete, so another takes over at once.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: KEYS: lease, verdicts hash; ARGV: holder, kind, verdict, channel. Stores
#: and publishes the verdict only while the lease is this holder's: 1, else 0.
VERDICT_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
"""


class LeaseKeys:
    """The lease's names in Redis under one prefix."""

    def __init__(self, prefix: str) -> None:
        """Name everything under ``prefix`` (the broker's, checked by its config)."""
        self.lease = f"{prefix}:cluster-status:lease"
        self.token = f"{prefix}:cluster-status:token"
        self.verdicts = f"{prefix}:cluster-status:verdicts"
        self.channel = f"{prefix}:cluster-status"


def holder_value(fingerprint: str, token: int) -> str:
    """The lease key's value while ``fingerprint`` holds it with ``token``."""
    return f"{fingerprint}:{token}"


@dataclass(frozen=True, slots=True)
class SharedVerdict:
    """One verdict as the checking node publishes it to the others."""

    token: int
    #: The holder's count of its verdicts: with ``token``, their order.
    seq: int
    #: The fingerprint digest of the message (``relay.cluster_status.verdicts.events``).
    digest: str
    #: The relay message (key, type, uniqueID, data...), as browsers get it.
    message: dict[str, Any]

    @property
    def kind(self) -> str:
        """The message type: one verdict of each is kept."""
        return str(self.message["type"])

    @property
    def order(self) -> tuple[int, int]:
        """Newer verdicts have a larger order."""
        return (self.token, self.seq)

    def encode(self) -> bytes:
        """The verdict as stored and published."""
        return orjson.dumps(
            {"token": self.token, "seq": self.seq, "digest": self.digest, "message": self.message}
        )


def decode_verdict(raw: bytes | str) -> SharedVerdict:
    """A verdict read from Redis.

    Raises:
        ValueError: ``raw`` is not a verdict.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"a cluster-status verdict that is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("a cluster-status verdict that is not an object")
    token, seq = value.get("token"), value.get("seq")
    digest, message = value.get("digest"), value.get("message")
    if (
        not isinstance(token, int)
        or not isinstance(seq, int)
        or isinstance(token, bool)
        or isinstance(seq, bool)
        or not isinstance(digest, str)
        or not isinstance(message, dict)
        or not isinstance(message.get("type"), str)
        or not isinstance(message.get("uniqueID"), str)
    ):
        raise ValueError("a cluster-status verdict without token, seq, digest, type and uniqueID")
    return SharedVerdict(token, seq, digest, message)
