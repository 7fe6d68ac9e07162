"""A node's link to Redis: publish what was posted here, receive what was posted anywhere.

``Broker`` is the whole interface a node needs: ``start``/``stop``,
``publish(instance, payload)`` (never blocks, never fails: posts queue while
Redis is away) and an ``on_receive`` callback for every message another node
published. Inside, one supervisor task holds a *session*: a connection, the
pattern subscription, a reload of the cluster-wide history, then a publisher
and a receiver side by side. Anything wrong with Redis (refused, slow, gone,
a subscription that stopped receiving) ends the session; the supervisor backs
off and starts another, and the queue waits meanwhile.

redis-py's commands time out after ``timeout_seconds`` (its own default would
be 5 s); the subscription is never read with a blocking call that could hit
that timeout: it is polled with a short timeout of its own, and proven alive
by a ping the node publishes to itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from relay.config.broker import BrokerConfig
from relay.core.snapshot import BrokerReading
from relay.links.backoff import RetryDelays
from relay.links.broker_wire import PUBLISH_SCRIPT, Keys, StreamId, unframe
from relay.links.outbox import Outbox

log = logging.getLogger("relay.broker")

#: Most publishes sent in one pipelined round trip.
BATCH_SIZE = 256


class BrokerState(enum.Enum):
    """Where the link to Redis stands."""

    #: Not connected yet since the node started.
    CONNECTING = "connecting"
    UP = "up"
    #: Redis cannot be reached or refuses; posts queue, delivery stays local.
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Received:
    """A message another node published, as the receiving node's hub takes it."""

    instance: str
    #: The message exactly as its origin node encoded it.
    payload: bytes
    #: Seconds since Redis took it, for messages reloaded from the stream; None when live.
    age: float | None
    #: Deliver to browsers (False: only keep it for replay, it predates this node).
    live: bool


OnReceive = Callable[[Received], None]


class StaleSubscriptionError(Exception):
    """The subscription stayed silent, not even the node's own ping came back."""


class Broker:
    """The link from one node to Redis."""

    def __init__(
        self,
        config: BrokerConfig,
        fingerprint: str,
        *,
        on_receive: OnReceive,
        backoff: RetryDelays,
        max_messages: int,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Link to ``config.url``; nothing is connected until ``start``.

        ``max_messages`` and ``max_age`` (seconds) bound each instance's stream,
        as they bound the local history; ``backoff`` spaces the reconnections.
        """
        self.config = config
        self._fingerprint = fingerprint
        self._on_receive = on_receive
        self._keys = Keys(config.prefix)
        self._ping_channel = self._keys.ping_channel(fingerprint)
        self._origin = fingerprint.encode()
        self._clock = clock
        self._outbox = Outbox(config.queue_size, config.queue_max_age_seconds, clock)
        self._backoff = backoff
        self.set_history(max_messages, max_age)
        self.state = BrokerState.CONNECTING
        self._state_since = clock()
        self.last_error: str | None = None
        self.published = 0
        self.received = 0
        #: Outages recovered from (the last one's reason stays in ``last_error``).
        self.reconnects = 0
        self.stale = 0
        # The newest stream id seen per instance, and Redis' time at the last
        # reload: what a reload after a gap compares with to tell the messages
        # this node missed from those it has.
        self._last_ids: dict[str, StreamId] = {}
        self._synced_ms: int | None = None
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        # Set once the first session is up or has failed: what start() waits for.
        self._first_attempt = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None

    def set_history(self, max_messages: int, max_age: float) -> None:
        """Bound the streams by these from the next publish on (a config reload)."""
        self._max_messages = max_messages
        self._max_age_ms = max(1, round(max_age * 1000))

    # What the node calls.

    def publish(self, instance: str, payload: memoryview | bytes) -> None:
        """Queue a message posted to this node for every other node; never blocks."""
        self._outbox.put(instance, payload)
        self._idle.clear()
        self._wakeup.set()

    async def start(self, wait: float = 0.0) -> None:
        """Start linking to Redis in the background.

        Waits up to ``wait`` seconds for the first session to be up (its
        history reloaded) or to have failed, so a node that starts next to a
        working Redis replays the cluster's history from its first browser
        on; a Redis that refuses costs nothing, one that does not answer at
        most that wait.
        """
        self._supervisor = asyncio.create_task(self._supervise(), name="relay-broker")
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._first_attempt.wait()

    async def stop(self, grace: float) -> None:
        """Give queued posts up to ``grace`` seconds to be published, then disconnect."""
        if self.state is BrokerState.UP:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._idle.wait()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None

    @property
    def queue_length(self) -> int:
        """Posts waiting to be published."""
        return len(self._outbox)

    @property
    def dropped(self) -> int:
        """Posts given up on: the queue was full, or they waited too long."""
        return self._outbox.dropped

    def reading(self) -> BrokerReading:
        """The link as ``/status/`` and ``/metrics`` show it (the URL never has a password)."""
        return BrokerReading(
            url=self.config.display_url,
            state=self.state.value,
            since_seconds=round(self._clock() - self._state_since, 3),
            last_error=self.last_error,
            published=self.published,
            received=self.received,
            queue=len(self._outbox),
            dropped=self._outbox.dropped,
            reconnects=self.reconnects,
            stale_subscriptions=self.stale,
        )

    # The session loop.

    async def _supervise(self) -> None:
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except StaleSubscriptionError as exc:
                self.stale += 1
                self._down(str(exc))
            except (RedisError, OSError, TimeoutError, ValueError) as exc:
                self._down(_describe(exc))
            except Exception as exc:
                # A bug, not Redis: say so loudly, and still keep trying.
                log.exception("broker session failed unexpectedly")
                self._down(_describe(exc))
            self._first_attempt.set()
            await asyncio.sleep(self._backoff.next_delay())

    async def _session(self) -> None:
        """One connection's life: connect, subscribe, reload, then publish and receive."""
        client, sentinel = self._client()
        pubsub: PubSub | None = None
        try:
            timeout = self.config.timeout_seconds
            async with asyncio.timeout(self.config.connect_timeout_seconds + timeout):
                await client.ping()
                script_sha: str = await client.script_load(PUBLISH_SCRIPT)
                pubsub = client.pubsub()
                await pubsub.psubscribe(self._keys.pattern)
                await pubsub.subscribe(self._ping_channel)
                await self._confirm_subscriptions(pubsub, 2)
            async with asyncio.timeout(timeout * 4):
                await self._reload(client)
            self._up()
            publisher = asyncio.create_task(self._publish_forever(client, script_sha))
            receiver = asyncio.create_task(self._receive_forever(client, pubsub))
            try:
                done, _ = await asyncio.wait(
                    (publisher, receiver), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (publisher, receiver):
                    task.cancel()
                for task in (publisher, receiver):
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            for task in done:
                task.result()
        finally:
            with contextlib.suppress(Exception):
                if pubsub is not None:
                    await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()
            if sentinel is not None:
                with contextlib.suppress(Exception):
                    await sentinel.aclose()

    def _client(self) -> tuple[aioredis.Redis, Sentinel | None]:
        """A client for this session (and, with Sentinel, the Sentinel client to close)."""
        config = self.config
        options: dict[str, Any] = {
            "socket_timeout": config.timeout_seconds,
            "socket_connect_timeout": config.connect_timeout_seconds,
            # The supervisor retries, with backoff; redis-py retrying inside a
            # command would only hold a publish up for longer.
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
            "client_name": f"relay-{self._fingerprint}",
        }
        if config.password is not None:
            options["password"] = config.password.get_secret_value()
        if config.uses_tls:
            options["ssl_ca_certs"] = config.ca_file
            options["ssl_cert_reqs"] = "required" if config.tls_verify else "none"
            options["ssl_check_hostname"] = config.tls_verify
        if not config.sentinels:
            return aioredis.Redis.from_url(config.url, **options), None
        parts = urlsplit(config.url)
        sentinel = Sentinel(
            [(address.host, address.port) for address in config.sentinels],
            sentinel_kwargs={
                "socket_timeout": config.timeout_seconds,
                "socket_connect_timeout": config.connect_timeout_seconds,
                "retry": Retry(NoBackoff(), 0),
            },
        )
        if parts.username:
            options["username"] = unquote(parts.username)
        if config.uses_tls:
            options["ssl"] = True
        options["db"] = int(parts.path.lstrip("/") or 0)
        # A new session asks the Sentinels again: after a fail-over, the new master.
        return sentinel.master_for(config.master_name, **options), sentinel

    async def _confirm_subscriptions(self, pubsub: PubSub, count: int) -> None:
        """Wait for Redis to confirm each subscription: from then on, nothing is missed."""
        confirmed = 0
        while confirmed < count:
            message = await pubsub.get_message(timeout=self.config.timeout_seconds)
            if message is None:
                raise TimeoutError("Redis did not confirm the subscription")
            if message["type"] in ("subscribe", "psubscribe"):
                confirmed += 1

    async def _reload(self, client: aioredis.Redis) -> None:
        """Read every instance's stream of the history window and hand it to the node.

        The first session only fills the node's history (those messages
        predate it). Later ones also deliver the messages this node missed in
        the gap: newer than the newest it had of their instance, or, for an
        instance it had none of, newer than the previous reload.
        """
        seconds, micros = await client.time()
        now_ms = seconds * 1000 + micros // 1000
        since = now_ms - self._max_age_ms
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
        for name, entries in zip(names, streams, strict=True):
            instance = name.decode()
            last = self._last_ids.get(instance)
            for raw_id, fields in entries:
                stream_id = StreamId.parse(raw_id)
                payload = fields.get(b"p")
                if payload is None or fields.get(b"o") == self._origin:
                    continue
                if last is not None:
                    missed = stream_id > last
                else:
                    missed = synced_ms is not None and stream_id.ms >= synced_ms
                self._seen(instance, stream_id)
                self._hand_over(
                    Received(instance, payload, max(0, now_ms - stream_id.ms) / 1000, missed)
                )

    async def _publish_forever(self, client: aioredis.Redis, script_sha: str) -> None:
        keys = self._keys
        while True:
            batch = self._outbox.take_batch(BATCH_SIZE)
            if not batch:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            pipe = client.pipeline(transaction=False)
            for item in batch:
                pipe.evalsha(
                    script_sha,
                    2,
                    keys.stream(item.instance),
                    keys.instances,
                    item.payload,
                    keys.channel(item.instance),
                    self._max_messages,
                    self._max_age_ms,
                    item.instance,
                    self._origin,
                )
            try:
                async with asyncio.timeout(self.config.timeout_seconds):
                    ids = await pipe.execute()
            except BaseException:
                # Unknown which of them Redis took: all are sent again. A copy
                # that did get through is dropped by every receiver, which
                # remembers message identities.
                self._outbox.put_back_batch(batch)
                raise
            self.published += len(batch)
            for item, raw_id in zip(batch, ids, strict=True):
                self._seen(item.instance, StreamId.parse(raw_id))

    async def _receive_forever(self, client: aioredis.Redis, pubsub: PubSub) -> None:
        config = self.config
        last_heard = last_ping = self._clock()
        while True:
            message = await pubsub.get_message(timeout=config.ping_interval_seconds)
            now = self._clock()
            if message is not None:
                last_heard = now
                if message["type"] == "pmessage":
                    self._received(message["channel"], message["data"])
                continue
            if now - last_heard >= config.stale_seconds:
                raise StaleSubscriptionError(
                    f"the subscription received nothing for {now - last_heard:.1f} s"
                )
            if now - last_ping >= config.ping_interval_seconds:
                last_ping = now
                # Through Redis and back along the subscription: proves the
                # whole path, not only that a socket is open.
                async with asyncio.timeout(config.timeout_seconds):
                    await client.publish(self._ping_channel, b"ping")

    def _received(self, channel: bytes, data: bytes) -> None:
        instance = self._keys.instance_of(channel)
        if instance is None:
            return
        try:
            stream_id, origin, payload = unframe(data)
        except ValueError:
            log.warning("ignored a malformed message on %s", channel.decode(errors="replace"))
            return
        self._seen(instance, stream_id)
        if origin == self._origin:
            # Delivered when it was posted here: not even parsed again.
            self.received += 1
            return
        self._hand_over(Received(instance, payload, None, True))

    def _hand_over(self, received: Received) -> None:
        self.received += 1
        try:
            self._on_receive(received)
        except Exception:
            # One bad message must not end the subscription.
            log.exception("handling a message from the broker failed")

    def _seen(self, instance: str, stream_id: StreamId) -> None:
        last = self._last_ids.get(instance)
        if last is None or stream_id > last:
            self._last_ids[instance] = stream_id

    # State changes, logged once per episode.

    def _up(self) -> None:
        was = self.state
        self.state = BrokerState.UP
        down_for = self._clock() - self._state_since
        self._state_since = self._clock()
        self._backoff.reset()
        self._first_attempt.set()
        if was is BrokerState.DOWN:
            self.reconnects += 1
            queued = len(self._outbox)
            log.info(
                "broker %s is up again after %.1f s down (%d %s queued)",
                self.config.display_url,
                down_for,
                queued,
                "post" if queued == 1 else "posts",
            )
        else:
            log.info("broker %s is up", self.config.display_url)

    def _down(self, reason: str) -> None:
        self.last_error = reason
        if self.state is BrokerState.DOWN:
            return
        self.state = BrokerState.DOWN
        self._state_since = self._clock()
        log.warning(
            "broker %s is down: %s; delivering locally and queueing posts",
            self.config.display_url,
            reason,
        )


def _describe(exc: BaseException) -> str:
    """A one-line reason, without secrets (redis-py's messages carry no password)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
