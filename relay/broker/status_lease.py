"""The cluster-status lease in Redis: one node per cluster checks, every node hears its verdicts.

``StatusLease`` carries out what ``relay.links.lease`` decides, with the
scripts of ``relay.links.lease_wire``: every ``ttl / 3`` the holder extends
the lease and every other node tries to take it; the holder publishes each
verdict through a script that refuses it once the lease is another's; every
node subscribes to the verdicts and, each round and after each
(re)subscription, reads the last verdict of each kind back from Redis, so a
subscription that silently lost a message is repaired within a round. A
subscription whose connection died without a word is pinged, found silent
and made again within ``stale_seconds``, as the message link's is.

It has its own redis.asyncio client (``relay.broker.connect``), apart from
the message link's, so a busy queue of posts never delays a renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from relay.broker.connect import new_client
from relay.config.broker import BrokerConfig
from relay.links.backoff import Backoff
from relay.links.lease import Lease, LeaseAction, LeaseChange
from relay.links.lease_wire import (
    RELEASE_SCRIPT,
    RENEW_SCRIPT,
    TAKE_SCRIPT,
    VERDICT_SCRIPT,
    LeaseKeys,
    SharedVerdict,
    decode_verdict,
    holder_value,
)
from relay.links.silence import SilenceWatch, StaleSubscriptionError
from relay.process.cancelling import cancel_and_wait

__all__ = ["StatusLease"]

log = logging.getLogger("relay.broker.lease")

#: What a failed Redis command raises here.
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


class StatusLease:
    """One node's part in the lease: compete, check while holding, hear every verdict."""

    def __init__(
        self,
        config: BrokerConfig,
        fingerprint: str,
        ttl: float,
        *,
        on_verdict: Callable[[SharedVerdict], None],
        on_acquire: Callable[[int, dict[str, SharedVerdict]], Awaitable[None]],
        on_lose: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Compete for a lease of ``ttl`` seconds in ``config``'s Redis; nothing runs before start.

        ``on_verdict`` gets every verdict read from Redis (the node's own
        too, and the same one more than once); ``on_acquire(token, stored)``
        and ``on_lose()`` are awaited when this node starts and stops
        checking. ``stored`` is the last verdict of each kind Redis held when
        this node took the lease: what the other nodes can have heard.
        """
        self._config = config
        self._fingerprint = fingerprint
        self._keys = LeaseKeys(config.prefix)
        self._lease = Lease(ttl, clock)
        self._clock = clock
        self._on_verdict = on_verdict
        self._on_acquire = on_acquire
        self._on_lose = on_lose
        self._pending: dict[str, SharedVerdict] = {}
        #: The verdicts Redis held when this node last took the lease.
        self._stored: dict[str, SharedVerdict] = {}
        self._wake = asyncio.Event()
        self._client: aioredis.Redis | None = None
        self._sentinel: Sentinel | None = None
        self._tasks: list[asyncio.Task[None]] = []
        #: Times this node took the lease.
        self.acquired = 0
        self._failing = False

    @property
    def holding(self) -> bool:
        """Whether this node runs the checks now."""
        return self._lease.holding

    @property
    def speaks_for_cluster(self) -> bool:
        """Whether this node sends the cluster's alerts.

        It does while it holds the lease, and after losing it to an outage of
        Redis until Redis answers it again (no other node can know it is the
        one then). An outage's end is sent by the node that sent its start,
        speaking or not (``relay.links.lease_speaker``).
        """
        return self._lease.holding or self._lease.lost_to_outage

    def reading(self) -> dict[str, Any]:
        """The lease as ``/cluster-status/`` shows it."""
        return {"holder": self._lease.holding, "token": self._lease.token}

    async def start(self) -> None:
        """Start competing and listening in the background; returns at once."""
        # A client of its own: a queue of posts on the message link never delays a renewal.
        self._client, self._sentinel = new_client(self._config, f"lease-{self._fingerprint}")
        self._tasks = [
            asyncio.create_task(self._rounds(), name="relay-status-lease"),
            asyncio.create_task(self._listen(), name="relay-status-verdicts"),
            asyncio.create_task(self._publish_forever(), name="relay-status-publish"),
        ]

    async def stop(self) -> None:
        """Stop, giving the lease up so that another node takes over at once."""
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(*tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        token = self._lease.token
        if self._lease.released() is not None:
            await self._on_lose()
            if token is not None and self._client is not None:
                with contextlib.suppress(*_REDIS_ERRORS):
                    async with asyncio.timeout(self._config.timeout_seconds):
                        await self._client.eval(
                            RELEASE_SCRIPT, 1, self._keys.lease, self._holder(token)
                        )
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
        if self._sentinel is not None:
            with contextlib.suppress(Exception):
                await self._sentinel.aclose()
        self._client = self._sentinel = None

    def publish(self, verdict: SharedVerdict) -> None:
        """Queue a verdict of this node's checks for the others; never blocks.

        Only the latest of each kind waits: an older one is superseded.
        """
        self._pending[verdict.kind] = verdict
        self._wake.set()

    # The rounds: take or renew, and lose the lease in time.

    async def _rounds(self) -> None:
        while True:
            await self._round()
            wait = self._lease.interval
            remaining = self._lease.remaining()
            if remaining is not None:
                # Wake when the lease would run out, not a round later.
                wait = min(wait, remaining)
            await asyncio.sleep(wait)

    async def _round(self) -> None:
        change = self._lease.expire()
        if change is not None:
            self._lease.lost_to_outage = True
            await self._changed(change, "its lease ran out before Redis renewed it")
        client = self._client
        assert client is not None
        sent_at = self._clock()
        try:
            async with asyncio.timeout(min(self._config.timeout_seconds, self._lease.interval)):
                change = await self._ask(client, sent_at)
        except _REDIS_ERRORS as exc:
            if not self._failing:
                self._failing = True
                log.warning("cluster-status lease: Redis does not answer: %s", _describe(exc))
            change = self._lease.failed()
            await self._changed(change, "Redis did not answer")
            return
        if self._failing:
            self._failing = False
            log.info("cluster-status lease: Redis answers again")
        await self._changed(change, "another node holds the lease")
        if self._pending:
            self._wake.set()

    async def _ask(self, client: aioredis.Redis, sent_at: float) -> LeaseChange | None:
        """One round trip of the lease, and the verdicts read back: the change it makes."""
        keys = self._keys
        ttl_ms = max(1, round(self._lease.ttl * 1000))
        if self._lease.action() is LeaseAction.RENEW:
            token = self._lease.token
            assert token is not None
            if await client.eval(RENEW_SCRIPT, 1, keys.lease, self._holder(token), ttl_ms):
                self._lease.renewed(sent_at)
                return None
            return self._lease.refused()
        taken = int(
            await client.eval(TAKE_SCRIPT, 2, keys.lease, keys.token, self._fingerprint, ttl_ms)
        )
        # Read back before taking over: the new holder starts from the last verdicts.
        self._stored = await self._reload(client)
        if taken:
            return self._lease.took(taken, sent_at)
        return self._lease.refused()

    async def _changed(self, change: LeaseChange | None, why: str) -> None:
        if change is LeaseChange.ACQUIRED:
            self.acquired += 1
            log.info(
                "cluster status: this node runs the checks now (lease token %s)", self._lease.token
            )
            await self._on_acquire(self._lease.token or 0, self._stored)
        elif change is LeaseChange.LOST:
            log.warning("cluster status: this node stopped running the checks: %s", why)
            await self._on_lose()

    def _holder(self, token: int) -> str:
        return holder_value(self._fingerprint, token)

    # Verdicts: publishing ours, hearing everyone's.

    async def _publish_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            client = self._client
            assert client is not None
            for kind, verdict in list(self._pending.items()):
                if verdict.token != self._lease.token:
                    # Checked under a lease since lost: the next holder speaks now.
                    self._pending.pop(kind, None)
                    continue
                try:
                    async with asyncio.timeout(self._config.timeout_seconds):
                        await client.eval(
                            VERDICT_SCRIPT,
                            2,
                            self._keys.lease,
                            self._keys.verdicts,
                            self._holder(verdict.token),
                            kind,
                            verdict.encode(),
                            self._keys.channel,
                        )
                except _REDIS_ERRORS:
                    break  # kept; the next round wakes this again
                if self._pending.get(kind) is verdict:
                    del self._pending[kind]

    async def _listen(self) -> None:
        backoff = Backoff(self._config.backoff_initial_seconds, self._config.backoff_max_seconds)
        while True:
            client = self._client
            assert client is not None
            pubsub = client.pubsub()
            try:
                async with asyncio.timeout(
                    self._config.connect_timeout_seconds + self._config.timeout_seconds
                ):
                    await pubsub.subscribe(self._keys.channel)
                    while await pubsub.get_message(timeout=self._config.timeout_seconds) is None:
                        pass  # the confirmation: from here on nothing is missed
                    await self._reload(client)
                backoff.reset()
                await self._hear_forever(pubsub)
            except StaleSubscriptionError as exc:
                # The rounds may well get answers meanwhile (a connection Redis
                # forgot, on its side only): say why the verdicts stopped coming.
                log.warning("cluster status: the verdicts' subscription %s; subscribing again", exc)
            except _REDIS_ERRORS:
                pass  # the rounds log Redis' absence; listen again after a pause
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff.next_delay())

    async def _hear_forever(self, pubsub: PubSub) -> None:
        """Hear every verdict published, until the subscription fails or falls silent.

        Raises:
            StaleSubscriptionError: nothing came for ``stale_seconds``, not even
                the answer to a ping: the connection died without a word (a cut
                link, Redis' host gone, a hung Redis), as the broker link's
                subscription may (``relay.links.silence``).
        """
        config = self._config
        watch = SilenceWatch(config.ping_interval_seconds, config.stale_seconds, self._clock())
        while True:
            message = await pubsub.get_message(timeout=config.ping_interval_seconds)
            now = self._clock()
            if message is not None:
                watch.heard(now)
                if message["type"] == "message":
                    self._heard(message["data"])
                continue
            if (silent := watch.silent_for(now)) is not None:
                raise StaleSubscriptionError(f"received nothing for {silent:.1f} s")
            if watch.ping_due(now):
                # Answered along the subscription itself: its connection is alive
                # both ways. The rounds prove the rest of the path every third of the lease.
                async with asyncio.timeout(config.timeout_seconds):
                    await pubsub.ping()

    async def _reload(self, client: aioredis.Redis) -> dict[str, SharedVerdict]:
        """Hear the last verdict of each kind Redis holds; return them by kind."""
        stored = {}
        for raw in (await client.hgetall(self._keys.verdicts)).values():
            if (verdict := self._heard(raw)) is not None:
                stored[verdict.kind] = verdict
        return stored

    def _heard(self, raw: bytes | str) -> SharedVerdict | None:
        try:
            verdict = decode_verdict(raw)
        except ValueError as exc:
            log.warning("cluster status: ignored a verdict from Redis: %s", exc)
            return None
        self._on_verdict(verdict)
        return verdict


def _describe(exc: BaseException) -> str:
    """A one-line reason, without secrets (redis-py's messages carry no password)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
