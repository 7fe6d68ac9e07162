"""What relay keeps in Redis and sends through it: key names, the publish script, frames.

Pure functions and constants; no I/O. Per instance, under the configured
prefix:

- ``<prefix>:history:<instance>``: a stream of the instance's messages, capped
  by count and age like a node's own history (fields ``p``: the message as its
  origin node encoded it, ``o``: that node's fingerprint);
- ``<prefix>:messages:<instance>``: the channel each message is published on,
  framed as ``<stream id> <origin fingerprint> <message>``; nodes subscribe to
  the pattern ``<prefix>:messages:*``, and skip their own messages unread;
- ``<prefix>:instances``: a sorted set of the instances that published lately
  (score: the time of their last message), so a node can reload every
  instance's stream without scanning keys.

Plus ``<prefix>:ping:<fingerprint>``, the channel each node sends itself a
ping on to prove its subscription still receives.
"""

from __future__ import annotations

from typing import NamedTuple

#: Appends a message to its instance's stream, trims the stream by count and
#: age (age measured on Redis' clock, from the id it just got), lets an idle
#: stream expire, indexes the instance, and publishes the framed message, all
#: in one atomic step: the order on the channel is the order in the stream.
PUBLISH_SCRIPT = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '*', 'p', ARGV[1], 'o', ARGV[6])
local ms = tonumber(string.match(id, '^%d+'))
local age = tonumber(ARGV[4])
redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f', math.max(0, ms - age)))
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', 2 * age))
redis.call('ZADD', KEYS[2], ms, ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('(%.0f', ms - 2 * age))
redis.call('PUBLISH', ARGV[2], id .. ' ' .. ARGV[6] .. ' ' .. ARGV[1])
return id
"""


class StreamId(NamedTuple):
    """A Redis stream entry id: milliseconds on Redis' clock, and a sequence number."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, raw: bytes | str) -> StreamId:
        """``b"1700000000000-3"`` as ``StreamId(1700000000000, 3)``.

        Raises:
            ValueError: ``raw`` is not a stream id.
        """
        text = raw.decode() if isinstance(raw, bytes) else raw
        ms, _, seq = text.partition("-")
        return cls(int(ms), int(seq or 0))

    def __str__(self) -> str:
        """The ID as Redis writes it."""
        return f"{self.ms}-{self.seq}"


class Keys:
    """The names relay uses in Redis under one prefix."""

    def __init__(self, prefix: str) -> None:
        """Name everything under ``prefix`` (checked by the config: no glob characters)."""
        self.prefix = prefix
        self.instances = f"{prefix}:instances"
        self._channel_head = f"{prefix}:messages:"
        self.pattern = self._channel_head + "*"
        self._channel_head_bytes = self._channel_head.encode()

    def stream(self, instance: str) -> str:
        """The stream holding ``instance``'s recent messages."""
        return f"{self.prefix}:history:{instance}"

    def channel(self, instance: str) -> str:
        """The channel ``instance``'s messages are published on."""
        return self._channel_head + instance

    def ping_channel(self, fingerprint: str) -> str:
        """The channel a node pings itself on."""
        return f"{self.prefix}:ping:{fingerprint}"

    def instance_of(self, channel: bytes) -> str | None:
        """The instance a message channel belongs to, or None for any other channel."""
        if not channel.startswith(self._channel_head_bytes):
            return None
        return channel[len(self._channel_head_bytes) :].decode("utf-8", "surrogateescape")


def frame(stream_id: bytes, origin: bytes, payload: bytes) -> bytes:
    """A message as the publish script sends it on the channel."""
    return b" ".join((stream_id, origin, payload))


def unframe(data: bytes) -> tuple[StreamId, bytes, bytes]:
    """Split a channel message into its stream id, its origin's fingerprint and the message.

    Raises:
        ValueError: ``data`` is not a framed message.
    """
    parts = data.split(b" ", 2)
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise ValueError("a broker message without a stream id and an origin")
    head, origin, payload = parts
    return StreamId.parse(head), origin, payload
