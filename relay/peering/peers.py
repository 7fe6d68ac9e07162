"""Outbound links to cluster peers, the aiohttp side: each message the hub routes is POSTed.

Each peer gets a keep-alive aiohttp session, a request timeout, and a few
sender tasks. What to send next, whether to wait, and what each answer means
is decided by the link's ``relay.links.peer_state.PeerLinkState``; this module
only carries it out. A slow or dead peer only fills (and overflows) its own
outbox: local delivery and the other peers never wait for it. When a peer
goes down, what its link held goes on through the others
(``relay.links.detour``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager

import aiohttp

from relay.config import PeerConfig, PeeringConfig
from relay.config.secrets import Secret
from relay.config.tls import peer_tls_context
from relay.core.snapshot import PeerReading
from relay.links.detour import detour
from relay.links.outbox import Outgoing
from relay.links.peer_batch import (
    BATCH_CAPABILITY,
    BATCH_PATH,
    CAPABILITY_HEADER,
    encode_covered,
    encode_record,
)
from relay.links.peer_state import (
    PeerLinkState,
    PeerState,
    Post,
    Stranded,
    receipt_fingerprint,
)
from relay.links.presence import PRESENCE_PATH

log = logging.getLogger("relay.peers")

#: Receipts are tiny JSON objects; anything longer is not a receipt.
MAX_RECEIPT_BYTES = 4096
#: Idle keep-alive connections are closed before the peer would close them
#: (Node, hence Aphlict, closes idle connections after 5 s), so a send never
#: races the peer's close.
KEEPALIVE_SECONDS = 4.0


class PeerLink:
    """One peer: its connection and its senders, doing what its ``PeerLinkState`` decides."""

    def __init__(
        self,
        name: str,
        peer: PeerConfig,
        settings: PeeringConfig,
        own_fingerprint: str,
        *,
        secret: Secret | None = None,
        clock: Callable[[], float] = time.monotonic,
        stranded: Stranded | None = None,
    ) -> None:
        """Link to ``peer`` (``name`` is its config entry, e.g. ``cluster[1]``).

        With a ``secret``, every POST carries it, as the peer's admin port
        expects. ``stranded`` is told what the link holds when it goes down.

        Raises:
            StartupError: the peer's CA file cannot be loaded.
        """
        self.machine = PeerLinkState(
            name, peer, settings, own_fingerprint, clock=clock, stranded=stranded
        )
        self.peer = peer
        self._settings = settings
        self._secret = secret
        self._tls = peer_tls_context(name, peer, settings)
        if self._tls is not None and not peer.tls_verify:
            log.warning("peer %s: certificate verification is off (tls_verify: false)", name)
        self._url = f"{peer.url}/"
        self._batch_url = peer.url + BATCH_PATH
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        # While a peer is down or not yet known, one message at a time probes it.
        self._probe = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._workers: list[asyncio.Task[None]] = []

    @property
    def name(self) -> str:
        """The peer's config entry, e.g. ``cluster[1]`` (it changes when the list does)."""
        return self.machine.name

    @name.setter
    def name(self, name: str) -> None:
        self.machine.name = name

    def offer(
        self,
        instance: str,
        payload: memoryview | bytes,
        record: bytes | None = None,
        covered: frozenset[str] | None = None,
    ) -> None:
        """Queue ``payload`` (and its batch ``record``, when one was encoded); never blocks.

        ``covered`` as the hub handed it on (see ``PeerLinkState.offer``).
        """
        self.machine.offer(instance, payload, record, covered)
        self.wake()

    def wake(self) -> None:
        """Messages were queued on the link's state: let a sender take them."""
        self._idle.clear()
        self._wakeup.set()

    def take_over(self, previous: PeerLink) -> None:
        """Carry on from ``previous``, this peer's stopped link (see ``PeerLinkState.adopt``)."""
        self.machine.adopt(previous.machine)
        if not self.machine.idle:
            self._idle.clear()
            self._wakeup.set()

    def reading(self) -> PeerReading:
        """This link now, as ``/status/`` and the metrics show it."""
        return self.machine.reading()

    async def announce(self, body: bytes) -> str | None:
        """POST this node's presence record to the peer; None once it took it, else why not.

        Mesh mode only (``relay.peering.presence``): on the link's session, so
        it carries the shared secret and the peer's TLS settings. Never to the
        node itself, nor before ``start``.
        """
        if self._session is None or self.machine.state is PeerState.SELF:
            return None
        try:
            async with self._session.post(self.peer.url + PRESENCE_PATH, data=body) as response:
                answer = await response.content.read(MAX_RECEIPT_BYTES)
                if response.status != 200:
                    return f"answered {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError, ssl.SSLError) as exc:
            return _describe(exc)
        # The answer names the node that took it: the node's own entry learns it is itself.
        self.machine.presence_answered(receipt_fingerprint(answer))
        return None

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
        if self.machine.state is PeerState.UP:
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

    # Sending.

    async def _send_forever(self) -> None:
        machine = self.machine
        while True:
            items = await self._next()
            try:
                async with self._turn():
                    post = machine.start(items)
                    if post is not None:
                        await self._send(post)
            except asyncio.CancelledError:
                # Stopped before an answer (a reload renewing the link): the messages go
                # back to the queue, which the next link takes over. A copy the peer did
                # take it drops as a duplicate.
                machine.outbox.put_back_batch(items)
                raise
            finally:
                machine.finish(items)
                if machine.idle:
                    self._idle.set()
                # A sender held back while this request was out may go now.
                self._wakeup.set()

    def _turn(self) -> AbstractAsyncContextManager[object]:
        """While the peer is not known to be up, senders probe it one at a time."""
        return self._probe if self.machine.probing else contextlib.nullcontext()

    async def _next(self) -> list[Outgoing]:
        """The next message(s) the link decides to send, once any backoff has run out."""
        machine = self.machine
        while True:
            wait = machine.delay()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            items = machine.take()
            if items is not None:
                return items
            if machine.idle:
                self._idle.set()
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _send(self, post: Post) -> None:
        try:
            try:
                status, receipt, capable = await self._post(post)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if isinstance(exc, aiohttp.ClientConnectorError):
                    raise  # no connection was made: the peer is away
                # A reused keep-alive connection the peer had just closed (a restart, a
                # handoff), found so while writing or reading: try once on a fresh one, in
                # place, not behind later posts. A copy the peer did take it drops.
                status, receipt, capable = await self._post(post)
        except (aiohttp.ClientError, TimeoutError, OSError, ssl.SSLError) as exc:
            self.machine.unanswered(post, _describe(exc), timed_out=isinstance(exc, TimeoutError))
            return
        self.machine.answered(post, status, receipt, capable)

    async def _post(self, post: Post) -> tuple[int, bytes, bool]:
        """Make ``post``; return the status, the receipt, and whether the peer takes batches."""
        assert self._session is not None
        if post.batch:
            request = self._session.post(self._batch_url, data=post.batch_body())
        else:
            (item,) = post.items
            request = self._session.post(
                self._url, params={"instance": item.instance}, data=item.payload
            )
        async with request as response:
            capable = BATCH_CAPABILITY in response.headers.get(CAPABILITY_HEADER, "").split()
            return response.status, await response.content.read(MAX_RECEIPT_BYTES), capable


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
            stranded=self._stranded,
        )

    def _stranded(self, down: PeerLinkState, held: list[Outgoing]) -> None:
        """``down`` went down holding ``held``: on with them through the peers that are up.

        Called in the step that brought the link down, before anything else
        is forwarded, so the copies go ahead of newer messages.
        """
        given = detour(held, down, [link.machine for link in self.links])
        for link in self.links:
            if link.machine in given:
                link.wake()
        if given:
            log.info(
                "peer %s (%s) went down holding %d messages; resent through %s",
                down.name,
                down.peer.url,
                len(held),
                ", ".join(f"{link.name} ({count})" for link, count in given.items()),
                extra={"peer": down.peer.url},
            )

    async def reconfigure(
        self, peers: Sequence[PeerConfig], settings: PeeringConfig, secret: Secret | None
    ) -> None:
        """Apply a new cluster list (a config reload).

        Links to peers listed before and after keep their queue, state and
        learned fingerprint; new peers get new links, removed ones are drained
        briefly and closed. New peering settings or a new secret renew every
        link (a new session, timeout and header); each new link takes over its
        predecessor's queue (messages in flight included), state and counters.
        """
        renew = settings != self._settings or secret != self._secret
        self._settings, self._secret = settings, secret
        old = {link.peer: link for link in self.links}
        if renew:
            # Stopped first, so that what they still hold (in flight too) goes to
            # the new links below. Until the swap, the hub keeps offering to these.
            await asyncio.gather(*(link.stop(1.0) for link in self.links))
        kept = {} if renew else dict(old)
        links, fresh = [], []
        for index, peer in enumerate(peers):
            link = kept.pop(peer, None)
            if link is None:
                link = self._link(index, peer)
                previous = old.get(peer)
                if previous is None:
                    log.info("peer cluster[%d] (%s) added", index, peer.url)
                else:
                    link.take_over(previous)  # the same peer: its queue and state carry over
                fresh.append(link)
            link.name = f"cluster[{index}]"
            links.append(link)
        # No await between taking the old links' queues over and the swap: nothing
        # offered meanwhile can be left behind in a stopped link.
        self.links = links
        if self._started:
            for link in fresh:
                await link.start()
        if not renew:
            await asyncio.gather(*(link.stop(1.0) for link in kept.values()))

    def forward(self, instance: str, payload: memoryview | bytes, covered: frozenset[str]) -> None:
        """Offer a message to every peer outside ``covered``; never blocks.

        ``covered`` holds the nodes that have the message (its ``touched``) and
        those the node it came from is sending it to itself. Peers that take
        batches also learn which nodes this node sends it to, so that they
        leave those out in turn.
        """
        targets = [link for link in self.links if link.machine.wants(covered)]
        if not targets:
            return
        record = None
        if any(link.machine.batching for link in targets):
            sending = {
                link.machine.fingerprint
                for link in targets
                if link.machine.state is PeerState.UP and link.machine.fingerprint is not None
            }
            record = encode_record(instance, encode_covered(covered | sending), payload)
        for link in targets:
            link.offer(instance, payload, record, covered)

    def congested(self) -> list[str]:
        """The links that are up but whose queues are full (see the overload policy)."""
        return [link.name for link in self.links if link.machine.congested]

    async def start(self) -> None:
        """Start every link."""
        self._started = True
        for link in self.links:
            await link.start()

    async def stop(self, grace: float) -> None:
        """Drain briefly, then close every link."""
        await asyncio.gather(*(link.stop(grace) for link in self.links))

    def readings(self) -> list[PeerReading]:
        """Every link now, in config order, for the node's snapshot."""
        return [link.reading() for link in self.links]


def _describe(exc: BaseException) -> str:
    """A one-line reason for a failed POST, without secrets (URLs carry none)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"certificate refused: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
