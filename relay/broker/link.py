"""A node's link to Redis: publish what was posted here, receive what was posted anywhere.

``Broker`` is the whole interface a node needs: ``start(sink)``/``stop`` and
``publish(instance, payload)`` (never blocks, never fails: posts queue while
Redis is away); every message another node published reaches ``sink`` (the
hub) parsed, through the receive path (``relay.broker.receive``). Inside, one
supervisor task holds a *session*: a connection (``relay.broker.connect``),
the pattern subscription, a reload of the cluster-wide history, then a
publisher and a receiver side by side. Anything wrong with Redis (refused,
slow, gone, a subscription that stopped receiving) ends the session; the
supervisor backs off and starts another, and the queue waits meanwhile.

redis-py's commands time out after ``timeout_seconds`` (its own default would
be 5 s); the subscription is never read with a blocking call that could hit
that timeout: it is polled with a short timeout of its own, and proven alive
by a ping the node publishes to itself.

A successor taking over in a handoff (``relay.node.handoff``) calls
``hold_reading`` before ``start``: posts queue, nothing is read, until
``resume_from`` gives it the stream position where its predecessor stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from relay.broker.connect import describe_failure, failure_reason, new_client
from relay.broker.receive import Inbound, OrderedSink, Sink
from relay.config import HistoryConfig, LimitsConfig
from relay.config.broker import BrokerConfig
from relay.core.snapshot import BrokerReading
from relay.links.backoff import RetryDelays
from relay.links.broker_wire import PUBLISH_SCRIPT, Keys, StreamId
from relay.links.outbox import Outbox
from relay.links.silence import SilenceWatch, StaleSubscriptionError
from relay.process.cancelling import cancel_and_wait

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


class Broker:
    """The link from one node to Redis."""

    def __init__(
        self,
        config: BrokerConfig,
        fingerprint: str,
        *,
        backoff: RetryDelays,
        history: HistoryConfig,
        limits: LimitsConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Link to ``config.url``; nothing is connected until ``start``.

        ``history`` bounds each instance's stream, as it bounds the local
        history; ``limits`` bound what is received, as they bound a POST;
        ``backoff`` spaces the reconnections.
        """
        self.config = config
        self._fingerprint = fingerprint
        self._keys = Keys(config.prefix)
        self._ping_channel = self._keys.ping_channel(fingerprint)
        self._origin = fingerprint.encode()
        self._clock = clock
        self._outbox = Outbox(
            config.queue_size, config.queue_max_age_seconds, clock, config.queue_max_bytes
        )
        self._backoff = backoff
        self._inbound = Inbound(self._keys, limits, clock)
        self.configure(history, limits)
        self.state = BrokerState.CONNECTING
        self._state_since = clock()
        self.last_error: str | None = None
        self.published = 0
        #: Outages recovered from (the last one's reason stays in ``last_error``).
        self.reconnects = 0
        self.stale = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        # Set once the first session is up or has failed: what start() waits for.
        self._first_attempt = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        # Set when a handoff holds the first session back until the predecessor's position.
        self._resume: asyncio.Event | None = None
        self._sink: OrderedSink | None = None
        # Posts queued so far, and those waiting for their place in Redis: a
        # POST is answered once everything queued before its answer is placed.
        self._queued = 0
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []

    def configure(self, history: HistoryConfig, limits: LimitsConfig) -> None:
        """Bound the streams and what is received by these from now on (a config reload)."""
        self._max_messages = history.max_messages
        self._max_age_ms = max(1, round(history.max_age_seconds * 1000))
        self._inbound.set_limits(limits)

    # What the node calls.

    def publish(self, instance: str, payload: memoryview | bytes) -> None:
        """Queue a message posted to this node for every node; never blocks."""
        self._outbox.put(instance, payload)
        self._queued += 1
        self._idle.clear()
        self._wakeup.set()

    async def placed(self) -> None:
        """Wait until every message queued so far holds its place in Redis.

        That place is the cluster's order: a POST answered after this returns
        comes, on every node and worker, before any post made after the
        answer. Returns at once while Redis is not up (posts are delivered
        locally then), and after ``timeout_seconds`` at the most. A successor
        in a handoff (``hold_reading``) first waits for its first session, as
        long as a start would and the predecessor's last posts may take:
        answered earlier, a post could be placed after one posted to another
        worker or node after the answer.
        """
        if self._resume is not None and self.state is BrokerState.CONNECTING:
            config = self.config
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(
                    config.connect_timeout_seconds + 2 * config.timeout_seconds
                ):
                    await self._first_attempt.wait()
        if self.state is not BrokerState.UP or self._done >= self._queued:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append((self._queued, waiter))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.timeout_seconds):
                await waiter

    @property
    def _done(self) -> int:
        """Messages queued that are placed in Redis or given up on (each is one or the other)."""
        return self.published + self._outbox.dropped

    def _wake_waiters(self, everyone: bool = False) -> None:
        """Answer the waiters whose messages are placed (or all of them: Redis went away)."""
        done, still = self._done, []
        for count, waiter in self._waiting:
            if everyone or count <= done:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((count, waiter))
        self._waiting = still

    async def start(self, sink: OrderedSink) -> None:
        """Start linking to Redis in the background, handing ``sink`` what others publish.

        Waits for the first session to be up (its history reloaded) or to
        have failed, at most the connect timeout plus the command timeout, so
        a node that starts next to a working Redis replays the cluster's
        history from its first browser on; a Redis that refuses costs
        nothing, one that does not answer at most that wait.
        """
        self._sink = sink
        self._supervisor = asyncio.create_task(self._supervise(sink), name="relay-broker")
        if self._resume is not None and not self._resume.is_set():
            return  # nothing to wait for: the first session starts at resume_from
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(
                self.config.connect_timeout_seconds + self.config.timeout_seconds
            ):
                await self._first_attempt.wait()

    @property
    def inbound(self) -> Inbound:
        """The receiving end, where its stream position is read (for a handoff)."""
        return self._inbound

    def hold_reading(self) -> None:
        """Start no session before ``resume_from``: a successor in a handoff (call before start)."""
        self._resume = asyncio.Event()

    def resume_from(self, last_ids: dict[str, StreamId], synced_ms: int | None) -> None:
        """Read the streams from this position on (the predecessor's): the first session starts."""
        if self._resume is None or self._resume.is_set():
            return
        self._inbound.resume_from(last_ids, synced_ms)
        self._resume.set()

    async def stop(self, grace: float) -> None:
        """Give queued posts up to ``grace`` seconds to be published, then disconnect."""
        if self.state is BrokerState.UP:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._idle.wait()
        if self._supervisor is not None:
            await cancel_and_wait(self._supervisor)
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        self._wake_waiters(everyone=True)
        if self._sink is not None:
            # What waits for Redis to return it is delivered here before the node stops.
            self._sink.set_ordering(False)

    @property
    def received(self) -> int:
        """Messages received from Redis (this node's own included)."""
        return self._inbound.received

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
            received=self._inbound.received,
            queue=len(self._outbox),
            dropped=self._outbox.dropped,
            reconnects=self.reconnects,
            stale_subscriptions=self.stale,
        )

    # The session loop.

    async def _supervise(self, sink: OrderedSink) -> None:
        if self._resume is not None:
            await self._resume.wait()
        while True:
            try:
                await self._session(sink)
            except asyncio.CancelledError:
                raise
            except StaleSubscriptionError as exc:
                self.stale += 1
                self._down(str(exc))
            except (RedisError, OSError, TimeoutError, ValueError) as exc:
                self._down(await self._reason(exc))
            except Exception as exc:
                # A bug, not Redis: say so loudly, and still keep trying.
                log.exception("broker session failed unexpectedly")
                self._down(describe_failure(exc))
            # No order from Redis while it is away: deliver locally, at once.
            sink.set_ordering(False)
            self._wake_waiters(everyone=True)
            self._first_attempt.set()
            await asyncio.sleep(self._backoff.next_delay())

    async def _reason(self, exc: BaseException) -> str:
        """Why a session failed; when it may be that the server is not Redis, what it is."""
        # A session that was up talked to Redis: only a failed start is looked into.
        if self.state is not BrokerState.UP:
            return await failure_reason(self.config, exc)
        return describe_failure(exc)

    async def _session(self, sink: OrderedSink) -> None:
        """One connection's life: connect, subscribe, reload, then publish and receive."""
        client, sentinel = new_client(self.config, self._fingerprint)
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
                await self._inbound.reload(client, self._max_age_ms, sink)
            self._up()
            # From now on what is posted here waits for its place in Redis' order
            # (and for no longer than twice the command timeout).
            sink.set_ordering(True, hold_seconds=2 * self.config.timeout_seconds)
            publisher = asyncio.create_task(self._publish_forever(client, script_sha))
            receiver = asyncio.create_task(self._receive_forever(client, pubsub, sink))
            try:
                done, _ = await asyncio.wait(
                    (publisher, receiver), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                # The receiver reads with redis-py, which can lose a cancel (see there).
                await cancel_and_wait(publisher, receiver)
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

    async def _confirm_subscriptions(self, pubsub: PubSub, count: int) -> None:
        """Wait for Redis to confirm each subscription: from then on, nothing is missed."""
        confirmed = 0
        while confirmed < count:
            message = await pubsub.get_message(timeout=self.config.timeout_seconds)
            if message is None:
                raise TimeoutError("Redis did not confirm the subscription")
            if message["type"] in ("subscribe", "psubscribe"):
                confirmed += 1

    async def _publish_forever(self, client: aioredis.Redis, script_sha: str) -> None:
        keys = self._keys
        while True:
            batch = self._outbox.take_batch(BATCH_SIZE)
            self._wake_waiters()  # for posts the queue gave up on, if any
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
                    await pipe.execute()
            except BaseException:
                # Unknown which of them Redis took: all are sent again. A copy
                # that did get through is dropped by every receiver, which
                # remembers message identities.
                self._outbox.put_back_batch(batch)
                raise
            self.published += len(batch)
            # Placed: their ids come back with them on the subscription, where
            # every node, this one too, delivers them in that order.
            self._wake_waiters()

    async def _receive_forever(self, client: aioredis.Redis, pubsub: PubSub, sink: Sink) -> None:
        config = self.config
        watch = SilenceWatch(config.ping_interval_seconds, config.stale_seconds, self._clock())
        while True:
            message = await pubsub.get_message(timeout=config.ping_interval_seconds)
            now = self._clock()
            if message is not None:
                watch.heard(now)
                if message["type"] == "pmessage":
                    self._inbound.live(message["channel"], message["data"], sink)
                continue
            if (silent := watch.silent_for(now)) is not None:
                raise StaleSubscriptionError(
                    f"the subscription received nothing for {silent:.1f} s"
                )
            if watch.ping_due(now):
                # Through Redis and back along the subscription: proves the
                # whole path, not only that a socket is open.
                async with asyncio.timeout(config.timeout_seconds):
                    await client.publish(self._ping_channel, b"ping")

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
