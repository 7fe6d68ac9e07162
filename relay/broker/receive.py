"""The broker's receive path: what other nodes published, parsed and handed to the hub.

Two ways in, one way out. A session starts by reloading the history window
from every instance's stream (``Inbound.reload``); from then on messages come
live on the pattern subscription (``Inbound.live``). Either way each message
passes ``Inbound.hand_over`` once, as a ``Received``: parsed under the node's
bounds into the ``Notification`` the hub takes (one that is not a message is
logged and left out), with its stream id, which says where it stands in its
instance's order in Redis. Nothing after this module parses it again.

A handoff (``relay.node.handoff``) reads where the node stands in every
stream (``Inbound.position``) and has the successor start from exactly that
position (``Inbound.resume_from``): its first reload then delivers what
follows the position and only keeps what precedes it, as after a gap.

This node's own messages come back too, and are handed over like the others:
while Redis is up the hub holds what was posted here until it comes back, so
that every node delivers every message in the one order Redis gave them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis

from relay.config import LimitsConfig
from relay.core.notification import Notification, bounds_of, parse_notification
from relay.errors import NotificationError
from relay.links.broker_wire import Keys, StreamId, unframe

log = logging.getLogger("relay.broker")


class Sink(Protocol):
    """Where received messages go (``relay.core.hub.Hub.receive`` has this signature)."""

    def receive(
        self,
        instance: str,
        notification: Notification,
        payload: bytes,
        *,
        at: float | None = None,
        live: bool = True,
    ) -> object:
        """Keep ``notification`` (encoded as ``payload``) and, when ``live``, deliver it."""


class OrderedSink(Sink, Protocol):
    """A sink that holds its own posts for the broker's order while Redis is up (the hub)."""

    def set_ordering(self, by_broker: bool, *, hold_seconds: float = 0.0) -> None:
        """Hold posts until the broker returns them (True), or deliver them at once (False).

        A post held longer than ``hold_seconds`` is delivered here all the same.
        """


@dataclass(frozen=True, slots=True)
class Received:
    """A message another node published, parsed, as the hub takes it."""

    instance: str
    #: Its place in the instance's stream (Redis' order of every node's publishes).
    stream_id: StreamId
    notification: Notification
    #: The message exactly as its origin node encoded it.
    payload: bytes
    #: When it entered the cluster, on this node's clock, for a message reloaded
    #: from the stream; None when it came live.
    at: float | None
    #: Deliver to browsers (False: only keep it for replay, it predates this node).
    live: bool


class Inbound:
    """One node's receiving end of the broker: the newest ids seen, and the hand-over."""

    def __init__(self, keys: Keys, limits: LimitsConfig, clock: Callable[[], float]) -> None:
        """Receive under ``keys``, every node's messages (this one's included)."""
        self._keys = keys
        self._clock = clock
        self.set_limits(limits)
        #: Messages received (this node's own included), each once however often read.
        self.received = 0
        # The newest stream id seen per instance, and Redis' time at the last
        # reload: what a reload after a gap compares with to tell the messages
        # this node missed from those it has.
        self._last_ids: dict[str, StreamId] = {}
        self._synced_ms: int | None = None
        # When this node began: a node may serve browsers long before its first
        # reload (Redis away at its start), and what Redis took since then is news.
        self._began = clock()

    def position(self) -> tuple[dict[str, StreamId], int | None]:
        """The newest stream id seen per instance, and Redis' time (ms) at the last reload."""
        return dict(self._last_ids), self._synced_ms

    def resume_from(self, last_ids: dict[str, StreamId], synced_ms: int | None) -> None:
        """Stand where another process stood: the next reload delivers only what follows."""
        self._last_ids = dict(last_ids)
        self._synced_ms = synced_ms

    def set_limits(self, limits: LimitsConfig) -> None:
        """Parse what comes next under these limits (a config reload)."""
        self._bounds = bounds_of(limits)

    def seen(self, instance: str, stream_id: StreamId) -> None:
        """Note a stream id of ``instance`` that came through the subscription or a reload.

        Counted in ``received`` only when it is new here: a reload after a gap
        reads again the messages the node has, and one Redis took between the
        subscription and the reload comes both ways.
        """
        last = self._last_ids.get(instance)
        if last is None or stream_id > last:
            self._last_ids[instance] = stream_id
            self.received += 1

    async def reload(self, client: aioredis.Redis, max_age_ms: int, sink: Sink) -> None:
        """Read every instance's stream of the last ``max_age_ms`` and hand it to ``sink``.

        The first session only fills the node's history with the messages
        that predate the node; it delivers those Redis took after the node
        began (it served browsers meanwhile if Redis was away at its start).
        Later ones also deliver the messages this node missed in the gap:
        newer than the newest it had of their instance, or, for an instance it
        had none of, newer than the previous reload.
        """
        seconds, micros = await client.time()
        now_ms = seconds * 1000 + micros // 1000
        since = now_ms - max_age_ms
        names = [
            name if isinstance(name, bytes) else name.encode()
            for name in await client.zrangebyscore(self._keys.instances, since, "+inf")
            if isinstance(name, bytes | str)
        ]
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.xrange(self._keys.stream(name.decode()), min=f"{since}-0", max="+")
        streams = await pipe.execute()
        # Redis' time when the previous session reloaded: everything before it
        # that this node does not know was already too old for it to have seen.
        synced_ms, self._synced_ms = self._synced_ms, now_ms
        if synced_ms is None:
            # Never reloaded, nor told a predecessor's position: the node's own
            # start, on Redis' clock, is where what it has missed begins.
            synced_ms = now_ms - round((self._clock() - self._began) * 1000)
        for name, entries in zip(names, streams, strict=True):
            instance = name.decode()
            last = self._last_ids.get(instance)
            for raw_id, fields in entries:
                stream_id = StreamId.parse(raw_id)
                payload = fields.get(b"p")
                if payload is None:
                    continue
                # Newer than what the node had of this instance, or since its last reload.
                missed = stream_id > last if last is not None else stream_id.ms >= synced_ms
                self.seen(instance, stream_id)
                age = max(0, now_ms - stream_id.ms) / 1000
                self.hand_over(sink, instance, stream_id, payload, age=age, live=missed)

    def live(self, channel: bytes, data: bytes, sink: Sink) -> None:
        """Hand ``sink`` a message that came on the pattern subscription."""
        instance = self._keys.instance_of(channel)
        if instance is None:
            return
        try:
            stream_id, _, payload = unframe(data)
        except ValueError:
            log.warning("ignored a malformed message on %s", channel.decode(errors="replace"))
            return
        self.seen(instance, stream_id)
        self.hand_over(sink, instance, stream_id, payload, age=None, live=True)

    def hand_over(
        self,
        sink: Sink,
        instance: str,
        stream_id: StreamId,
        payload: bytes,
        *,
        age: float | None,
        live: bool,
    ) -> None:
        """Parse one message a node (this one too) published and give it to ``sink``.

        ``age`` is how long ago Redis took it (None for a live one). Every
        message read from the broker passes here, in the order of its stream;
        one read again (a reload after a gap) is a copy the hub drops.
        """
        try:
            received = self._parsed(instance, stream_id, payload, age, live)
            if received is not None:
                sink.receive(
                    received.instance,
                    received.notification,
                    received.payload,
                    at=received.at,
                    live=received.live,
                )
        except Exception:
            # One bad message must not end the subscription.
            log.exception("handling a message from the broker failed")

    def _parsed(
        self, instance: str, stream_id: StreamId, payload: bytes, age: float | None, live: bool
    ) -> Received | None:
        """The message as the hub takes it, or None (logged) when it is not a notification."""
        try:
            notification = parse_notification(payload, **self._bounds)
        except NotificationError as exc:
            log.warning("ignored a message from the broker: %s", exc)
            return None
        at = None if age is None else self._clock() - age
        return Received(instance, stream_id, notification, payload, at, live)
