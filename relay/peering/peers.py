"""Outbound links to cluster peers: each message the hub routes is POSTed to every other node.

Each peer gets a bounded outbox, a keep-alive aiohttp session, a request
timeout, and a few sender tasks that retry with backoff while it is down. A
slow or dead peer only fills (and overflows) its own outbox: local delivery
and the other peers never wait for it.

Fingerprints are learned from receipts, as Aphlict does: a peer whose
fingerprint is in a message's ``touched`` list already has the message, and a
peer whose receipt carries this node's own fingerprint is this node.

A receipt that says the peer is a relay node (``relay.links.peer_batch``) switches
its link to batches: each POST then carries whatever is queued, up to a size,
with the ``covered`` set that keeps forwarding at N-1 transfers per post.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import orjson

from relay.config import PeerConfig, PeeringConfig
from relay.config.secrets import Secret
from relay.errors import StartupError
from relay.links.backoff import Backoff
from relay.links.outbox import Outbox, Outgoing
from relay.links.peer_batch import (
    BATCH_BYTES,
    BATCH_CAPABILITY,
    BATCH_PATH,
    CAPABILITY_HEADER,
    MAX_BATCH_MESSAGES,
    SOLO_BYTES,
    encode_batch,
    encode_covered,
    encode_record,
)

log = logging.getLogger("relay.peers")

#: Receipts are tiny JSON objects; anything longer is not a receipt.
MAX_RECEIPT_BYTES = 4096
#: The smallest a batch shrinks to on a slow link (a few typical notifications).
MIN_BATCH_BYTES = 2048
#: A link in batch mode sends a second batch while one is in flight only when
#: this many messages wait (about a full batch of typical notifications).
BUSY_QUEUE = 256
#: Idle keep-alive connections are closed before the peer would close them
#: (Node, hence Aphlict, closes idle connections after 5 s), so a send never
#: races the peer's close.
KEEPALIVE_SECONDS = 4.0


class PeerState(enum.Enum):
    """What this node knows of a peer."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"
    #: The peer answers but refuses messages (4xx: a secret mismatch, say).
    REFUSED = "refused"
    #: The entry is this very node (its receipt carried our fingerprint).
    SELF = "self"


class PeerLink:
    """One peer: its outbox, its connection and its senders."""

    def __init__(
        self,
        name: str,
        peer: PeerConfig,
        settings: PeeringConfig,
        own_fingerprint: str,
        *,
        secret: Secret | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Link to ``peer`` (``name`` is its config entry, e.g. ``cluster[1]``).

        With a ``secret``, every POST carries it, as the peer's admin port expects.
        """
        self.name = name
        self._tls = peer_tls_context(name, peer, settings)
        if self._tls is not None and not peer.tls_verify:
            log.warning("peer %s: certificate verification is off (tls_verify: false)", name)
        self._context = {"peer": f"{peer.protocol}://{peer.host}:{peer.port}"}
        self._secret = secret
        self.peer = peer
        self._settings = settings
        self._own_fingerprint = own_fingerprint
        self._clock = clock
        self._outbox = Outbox(settings.queue_size, settings.queue_max_age_seconds, clock)
        self._backoff = Backoff(settings.backoff_initial_seconds, settings.backoff_max_seconds)
        self._url = f"{peer.protocol}://{peer.host}:{peer.port}/"
        self._batch_url = f"{peer.protocol}://{peer.host}:{peer.port}{BATCH_PATH}"
        self.state = PeerState.UNKNOWN
        self.fingerprint: str | None = None
        #: True once the peer's receipts say it takes batches (it is a relay node).
        self.batching = False
        self._batches_refused = False
        #: How many bytes a batch may hold now: it shrinks when a batch times out
        #: (a link too slow to carry a full one within the request deadline).
        self._batch_bytes = BATCH_BYTES
        #: Messages the peer accepted, and the POSTs that carried them.
        self.sent = 0
        self.requests = 0
        self.failed = 0
        self.last_error: str | None = None
        self.last_latency: float | None = None
        self._retry_at = 0.0
        self._in_flight = 0
        self._in_flight_messages = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        # While a peer is down or not yet known, one message at a time probes it.
        self._probe = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._workers: list[asyncio.Task[None]] = []

    # What the hub calls.

    def wants(self, covered: frozenset[str]) -> bool:
        """Whether a message the ``covered`` nodes have (or are being sent) should go here."""
        if self.state is PeerState.SELF:
            return False
        return self.fingerprint is None or self.fingerprint not in covered

    def offer(
        self, instance: str, payload: memoryview | bytes, record: bytes | None = None
    ) -> None:
        """Queue ``payload`` (and its batch ``record``, when one was encoded)."""
        self._outbox.put(instance, payload, record)
        self._idle.clear()
        self._wakeup.set()

    @property
    def congested(self) -> bool:
        """True when the peer is up but its queue is full: the link is not keeping up."""
        return self.state is PeerState.UP and self._outbox.full

    # Lifecycle.

    async def start(self) -> None:
        """Open the session and start the senders."""
        connector = aiohttp.TCPConnector(
            limit=self._settings.max_in_flight,
            ssl=self._tls or True,
            keepalive_timeout=KEEPALIVE_SECONDS,
        )
        headers = {"Content-Type": "application/json"}
        if self._secret is not None:
            headers["Authorization"] = self._secret.bearer()
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout_seconds),
            headers=headers,
            raise_for_status=False,
        )
        self._workers = [
            asyncio.create_task(self._send_forever(), name=f"relay-peer-{self.name}")
            for _ in range(self._settings.max_in_flight)
        ]

    async def stop(self, grace: float) -> None:
        """Give queued messages up to ``grace`` seconds to go out, then close."""
        if self.state is PeerState.UP:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._idle.wait()
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def status(self) -> dict[str, Any]:
        """This link as ``/status/`` shows it."""
        return {
            "host": self.peer.host,
            "port": self.peer.port,
            "protocol": self.peer.protocol,
            "fingerprint": self.fingerprint,
            "self": self.state is PeerState.SELF,
            "state": self.state.value,
            "batching": self.batching,
            "sent": self.sent,
            "requests": self.requests,
            "failed": self.failed,
            "dropped": self._outbox.dropped,
            "queue": len(self._outbox),
            "in_flight": self._in_flight_messages,
            "last_error": self.last_error,
            "last_latency_ms": None if self.last_latency is None else self.last_latency * 1000,
        }

    # Sending.

    async def _send_forever(self) -> None:
        while True:
            items = await self._next()
            self._in_flight += 1
            self._in_flight_messages += len(items)
            try:
                if self.state is PeerState.UP:
                    await self._send(items)
                else:
                    async with self._probe:
                        if self._clock() < self._retry_at:
                            # Another probe failed while this one waited: back off too.
                            self._outbox.put_back_batch(items)
                            continue
                        await self._send(items)
            finally:
                self._in_flight -= 1
                self._in_flight_messages -= len(items)
                if not self._in_flight and not self._outbox:
                    self._idle.set()
                # A sender held back while this request was out may go now.
                self._wakeup.set()

    async def _next(self) -> list[Outgoing]:
        """The next message(s) to send, once any backoff has run out.

        A link in batch mode takes what is queued, up to a batch's size; a
        large message always travels alone. It keeps one batch in flight, and
        more only while a full batch's worth waits: what queues up during a
        round trip goes out together in the next batch, which costs both nodes
        far less than a request per message, and a link whose round trip is
        long still gets the requests in flight it needs.
        """
        while True:
            wait = self._retry_at - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            item = self._outbox.take() if self._may_send() else None
            if item is not None:
                if not self.batching or len(item.payload) > SOLO_BYTES:
                    return [item]
                return self._fill_batch(item)
            if not self._in_flight:
                self._idle.set()
            self._wakeup.clear()
            await self._wakeup.wait()

    def _may_send(self) -> bool:
        if not self.batching or not self._in_flight:
            return True
        return len(self._outbox) >= BUSY_QUEUE

    def _fill_batch(self, first: Outgoing) -> list[Outgoing]:
        items = [first]
        size = len(first.payload)
        while len(items) < MAX_BATCH_MESSAGES and size < self._batch_bytes:
            item = self._outbox.take()
            if item is None:
                break
            if len(item.payload) > SOLO_BYTES:
                self._outbox.put_back(item)
                break
            items.append(item)
            size += len(item.payload)
        return items

    async def _send(self, items: list[Outgoing]) -> None:
        if self.state is PeerState.SELF:
            return
        # Several items were taken as a batch and go as one, even if the link
        # has since learned that the peer takes none: it will answer 404.
        batch = len(items) > 1 or (self.batching and len(items[0].payload) <= SOLO_BYTES)
        started = self._clock()
        try:
            try:
                status, body, capable = await self._post(items, batch)
            except aiohttp.ServerDisconnectedError:
                # A reused keep-alive connection the peer had just closed: try a fresh one.
                status, body, capable = await self._post(items, batch)
        except (aiohttp.ClientError, TimeoutError, OSError, ssl.SSLError) as exc:
            if isinstance(exc, TimeoutError) and len(items) > 1:
                # Resent whole, the batch would time out again on a slow link: smaller
                # batches get through (and grow back once they do).
                self._batch_bytes = max(MIN_BATCH_BYTES, self._batch_bytes // 4)
            self._failed(items, _describe(exc))
            return
        if batch and status == 200:
            self._batch_bytes = min(BATCH_BYTES, self._batch_bytes * 2)
        self.requests += 1
        self.last_latency = self._clock() - started
        if status >= 500:
            self._failed(items, f"HTTP {status}")
            return
        if batch and status in (404, 405, 413):
            # Not (or no longer) a relay node that takes batches: resend one by one,
            # and do not believe its receipts' header again until it restarts.
            self.batching = False
            self._batches_refused = True
            self._outbox.put_back_batch(items)
            log.info(
                "%s does not take batches (HTTP %d); posting one message at a time",
                self._label(),
                status,
                extra=self._context,
            )
            return
        if status != 200:
            self._refused(len(items), f"HTTP {status}: {_excerpt(body)}")
            return
        self._succeeded(_receipt_fingerprint(body), len(items), capable)

    async def _post(self, items: list[Outgoing], batch: bool) -> tuple[int, bytes, bool]:
        """POST ``items``; return the status, the receipt, and whether the peer takes batches."""
        assert self._session is not None
        if batch:
            records = [
                item.record or encode_record(item.instance, b"[]", item.payload) for item in items
            ]
            request = self._session.post(self._batch_url, data=encode_batch(records))
        else:
            (item,) = items
            request = self._session.post(
                self._url, params={"instance": item.instance}, data=item.payload
            )
        async with request as response:
            capable = BATCH_CAPABILITY in response.headers.get(CAPABILITY_HEADER, "").split()
            return response.status, await response.content.read(MAX_RECEIPT_BYTES), capable

    def _succeeded(self, fingerprint: str | None, count: int, capable: bool) -> None:
        self.sent += count
        self._backoff.reset()
        self._retry_at = 0.0
        if fingerprint == self._own_fingerprint:
            self.state = PeerState.SELF
            self.fingerprint = fingerprint
            self._outbox.clear()
            log.info(
                "%s is this node; it will not be sent messages", self._label(), extra=self._context
            )
            return
        restarted = fingerprint is not None and self.fingerprint not in (None, fingerprint)
        if restarted:
            self._batches_refused = False
        capable = capable and not self._batches_refused
        if capable != self.batching:
            self.batching = capable
            if self.state is PeerState.UP:
                # Up all along, yet a different program now: say what changed.
                log.info(
                    "%s %s",
                    self._label(),
                    "takes batches" if capable else "does not take batches: one message per POST",
                    extra=self._context,
                )
        if fingerprint is not None:
            self.fingerprint = fingerprint
        if self.state is not PeerState.UP:
            was_down = self.state in (PeerState.DOWN, PeerState.REFUSED)
            self.state = PeerState.UP
            self.last_error = None
            log.info(
                "%s is %s (fingerprint %s%s%s)",
                self._label(),
                "up again" if was_down else "up",
                self.fingerprint,
                ", restarted" if restarted else "",
                ", takes batches" if self.batching else "",
                extra=self._context,
            )
        elif restarted:
            log.info(
                "%s restarted (fingerprint %s)",
                self._label(),
                self.fingerprint,
                extra=self._context,
            )

    def _refused(self, count: int, reason: str) -> None:
        """The peer is alive but refuses the message(s); retrying will not help."""
        self.failed += 1
        self._outbox.dropped += count
        self.last_error = reason
        if self.state is not PeerState.REFUSED:
            self.state = PeerState.REFUSED
            log.warning("%s refuses messages: %s", self._label(), reason, extra=self._context)

    def _failed(self, items: list[Outgoing], reason: str) -> None:
        self.failed += 1
        self.last_error = reason
        self._outbox.put_back_batch(items)
        self._retry_at = self._clock() + self._backoff.next_delay()
        if self.state is not PeerState.DOWN:
            self.state = PeerState.DOWN
            log.warning("%s is down: %s", self._label(), reason, extra=self._context)

    def _label(self) -> str:
        return f"peer {self.name} ({self.peer.protocol}://{self.peer.host}:{self.peer.port})"


class PeerSet:
    """Every configured peer; the hub's ``forward`` callable."""

    def __init__(
        self,
        peers: Sequence[PeerConfig],
        settings: PeeringConfig,
        own_fingerprint: str,
        *,
        secret: Secret | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Prepare a link per configured peer; nothing is sent until ``start``."""
        self._own_fingerprint = own_fingerprint
        self._clock = clock
        self._settings = settings
        self._secret = secret
        self._started = False
        self.links = [self._link(index, peer) for index, peer in enumerate(peers)]

    def _link(self, index: int, peer: PeerConfig) -> PeerLink:
        return PeerLink(
            f"cluster[{index}]",
            peer,
            self._settings,
            self._own_fingerprint,
            secret=self._secret,
            clock=self._clock,
        )

    async def reconfigure(
        self, peers: Sequence[PeerConfig], settings: PeeringConfig, secret: Secret | None
    ) -> None:
        """Apply a new cluster list (a config reload).

        Links to peers listed before and after keep their queue, state and
        learned fingerprint; new peers get new links, removed ones are drained
        briefly and closed. New peering settings or a new secret renew every link.
        """
        renew = settings != self._settings or secret != self._secret
        self._settings, self._secret = settings, secret
        kept = {} if renew else {link.peer: link for link in self.links}
        links = []
        for index, peer in enumerate(peers):
            link = kept.pop(peer, None)
            if link is None:
                link = self._link(index, peer)
                if self._started:
                    await link.start()
                log.info("peer cluster[%d] %s:%d added", index, peer.host, peer.port)
            link.name = f"cluster[{index}]"
            links.append(link)
        removed = kept.values() if not renew else self.links
        self.links = links
        await asyncio.gather(*(link.stop(1.0) for link in removed))

    def forward(self, instance: str, payload: memoryview | bytes, covered: frozenset[str]) -> None:
        """Offer a message to every peer outside ``covered``; never blocks.

        ``covered`` holds the nodes that have the message (its ``touched``) and
        those the node it came from is sending it to itself. Peers that take
        batches also learn which nodes this node sends it to, so that they
        leave those out in turn.
        """
        targets = [link for link in self.links if link.wants(covered)]
        if not targets:
            return
        record = None
        if any(link.batching for link in targets):
            sending = {
                link.fingerprint
                for link in targets
                if link.state is PeerState.UP and link.fingerprint is not None
            }
            record = encode_record(instance, encode_covered(covered | sending), payload)
        for link in targets:
            link.offer(instance, payload, record)

    def congested(self) -> list[str]:
        """The links that are up but whose queues are full (see the overload policy)."""
        return [link.name for link in self.links if link.congested]

    async def start(self) -> None:
        """Start every link."""
        self._started = True
        for link in self.links:
            await link.start()

    async def stop(self, grace: float) -> None:
        """Drain briefly, then close every link."""
        await asyncio.gather(*(link.stop(grace) for link in self.links))

    def status(self) -> list[dict[str, Any]]:
        """Every link as ``/status/`` shows it."""
        return [link.status() for link in self.links]


def peer_tls_context(name: str, peer: PeerConfig, settings: PeeringConfig) -> ssl.SSLContext | None:
    """The client TLS context for an https peer (None for http).

    Raises:
        StartupError: the CA file cannot be loaded; names the setting and the file.
    """
    if peer.protocol != "https":
        return None
    ca_file = peer.ca_file or settings.ca_file
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        setting = f"{name}.ca_file" if peer.ca_file else "peering.ca_file"
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise StartupError(f"{setting}: cannot load the CA file {ca_file}: {reason}") from None
    if not peer.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _receipt_fingerprint(body: bytes) -> str | None:
    try:
        receipt = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    fingerprint = receipt.get("fingerprint") if isinstance(receipt, dict) else None
    return fingerprint if isinstance(fingerprint, str) else None


def _excerpt(body: bytes) -> str:
    return body[:200].decode(errors="replace").strip()


def _describe(exc: BaseException) -> str:
    """A one-line reason for a failed POST, without secrets (URLs carry none)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"certificate refused: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
