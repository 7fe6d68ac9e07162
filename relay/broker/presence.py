"""Presence in Redis: each node (each worker) announces itself and reads who else is there.

``Presence`` runs one round per ``presence_interval_seconds`` on a client of
its own: the announce script (``relay.links.presence``) stores this process'
record with its expiry and returns every record under the prefix, which the
:class:`Roster` keeps for ``/status/``. A round that cannot reach Redis is
noted and tried again next interval; meanwhile the last reading ages, so the
other nodes turn stale, then gone, as they would if they had stopped. After
it, and after Redis lost every record (the script says whether this
process' own was still there), the roster holds the nodes the first
readings miss until they could have announced again. The
first reading logs how many other nodes share the prefix: a node started on
the wrong Redis, or with the default prefix next to a production cluster,
says so at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from relay.broker.connect import new_client
from relay.config.broker import BrokerConfig
from relay.core.snapshot import NodeSnapshot
from relay.links.presence import (
    ANNOUNCE_SCRIPT,
    GONE_AFTER,
    Identity,
    PresenceKeys,
    Rates,
    announcement,
    parse_listing,
)
from relay.links.presence_log import PresenceLog
from relay.links.roster import Roster

log = logging.getLogger("relay.broker.presence")


def presence_for(
    config: BrokerConfig | None,
    fingerprint: str,
    snapshot: Callable[[], NodeSnapshot],
    worker: int | None,
    address: Callable[[], str],
) -> Presence | None:
    """The presence of a node in broker mode (``config`` set); None otherwise."""
    if config is None:
        return None
    return Presence(config, fingerprint, snapshot=snapshot, worker=worker, address=address)


class Presence:
    """This process' presence under the broker prefix, and what it sees of the others."""

    def __init__(
        self,
        config: BrokerConfig,
        fingerprint: str,
        *,
        snapshot: Callable[[], NodeSnapshot],
        worker: int | None = None,
        address: Callable[[], str] = str,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Announce ``snapshot()`` for the process ``fingerprint``, worker ``worker`` of its node.

        A worker's node is its supervisor (its parent process); a node
        without workers is itself. ``address()`` is where the node is
        (``host:admin port``), asked each round: the port is bound after start.
        """
        self.identity = Identity.of_this_process(
            fingerprint,
            worker=worker,
            interval=config.presence_interval_seconds,
            started_at=wall_clock(),
        )
        self.config = config
        # Nodes starting side by side meet within a few rounds: no news.
        settle = GONE_AFTER * self.identity.interval
        self.roster = Roster(self.identity, config.prefix, clock, settle)
        self._keys = PresenceKeys(config.prefix)
        self._snapshot = snapshot
        self._address = address
        self._rates = Rates(clock)
        where = f"broker prefix {config.prefix!r}"
        self._changes = PresenceLog(
            log, found_in=f"under {where}", joined=f"under {where}", left=where
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._clients: tuple[aioredis.Redis, Sentinel | None] | None = None

    def status(self) -> dict[str, Any]:
        """The ``nodes`` entry of ``/status/``."""
        return self.roster.status()

    async def start(self) -> None:
        """Announce from now on, in the background (the first round at once)."""
        self._clients = new_client(self.config, f"presence-{self.identity.fingerprint}")
        self._task = asyncio.create_task(self._run(), name="relay-presence")

    async def stop(self) -> None:
        """Stop announcing and withdraw this process' record, so it is gone at once."""
        # The event ends the loop even when redis-py swallows the cancellation
        # of a round under way (it can: the round then completes normally).
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._clients is None:
            return
        client, sentinel = self._clients
        self._clients = None
        # Best effort: a record left behind expires by itself.
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self.config.timeout_seconds):
                fingerprint = self.identity.fingerprint
                await client.zrem(self._keys.index, fingerprint)
                await client.delete(self._keys.record_head + fingerprint)
        with contextlib.suppress(Exception):
            await client.aclose()
        if sentinel is not None:
            with contextlib.suppress(Exception):
                await sentinel.aclose()

    async def _run(self) -> None:
        assert self._clients is not None
        client = self._clients[0]
        script = client.register_script(ANNOUNCE_SCRIPT)
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(
                    self.config.connect_timeout_seconds + self.config.timeout_seconds
                ):
                    await self._round(script)
            except (RedisError, OSError, TimeoutError, ValueError) as exc:
                reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
                log.debug("presence round failed: %s", exc)
                self.roster.failed(reason)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.identity.interval):
                    await self._stopping.wait()

    async def _round(self, script: Any) -> None:
        """Announce this process and take the reading the script returns."""
        record = announcement(self._snapshot(), self.identity, self._rates, self._address())
        expiry_ms = max(1, round(GONE_AFTER * self.identity.interval * 1000))
        reply = await script(
            keys=[self._keys.index],
            args=[self._keys.record_head, self.identity.fingerprint, record.encode(), expiry_ms],
        )
        listing = parse_listing(reply)
        self.roster.update(listing.sightings, listing.unreadable, own_kept=listing.own_kept)
        self._changes.seen(self.roster.others())
