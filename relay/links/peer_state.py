"""A peer link's decisions, without I/O: what to send next, and what each answer means.

``PeerLinkState`` holds one peer's outbox, what this node knows of the peer
(unknown, up, down, refusing, or this very node), its backoff, the size of
its batches and its counters. The aiohttp side (``relay.peering.peers``) asks
it for the next messages (``take``), turns them into a ``Post`` (``start``),
makes the request, and reports how it went (``answered`` or ``unanswered``); it
decides nothing itself. Time comes from an injected clock.

Fingerprints are learned from receipts, as Aphlict does: a peer whose
fingerprint is in a message's ``touched`` list already has the message, and a
peer whose receipt carries this node's own fingerprint is this node.

A receipt that says the peer is a relay node (``relay.links.peer_batch``)
switches the link to batches: each POST then carries whatever is queued, up
to a size, with the ``covered`` set that keeps forwarding at N-1 transfers
per post. When a link that was up goes down, it tells its ``stranded`` sink
what it holds unanswered, for the other peers to carry on
(``relay.links.detour``).

Pure: no asyncio, no network library.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from relay.config import PeerConfig, PeeringConfig
from relay.core.snapshot import PeerReading
from relay.links.backoff import Backoff, RetryDelays
from relay.links.outbox import Outbox, Outgoing
from relay.links.peer_batch import (
    BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    SOLO_BYTES,
    encode_batch,
    encode_record,
)

log = logging.getLogger("relay.peers")

#: The smallest a batch shrinks to on a slow link (a few typical notifications).
MIN_BATCH_BYTES = 2048
#: Answers to a batch by which a peer says it takes none (not, or no longer, a relay node).
NO_BATCHES = frozenset({404, 405, 413})


#: ``stranded(link, messages)``: ``link`` went down from up holding ``messages`` unanswered.
Stranded = Callable[["PeerLinkState", list[Outgoing]], None]


class PeerState(enum.Enum):
    """What this node knows of a peer."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"
    #: The peer answers but refuses messages (4xx: a secret mismatch, say).
    REFUSED = "refused"
    #: The entry is this very node (its receipt carried our fingerprint).
    SELF = "self"


@dataclass(frozen=True, slots=True)
class Post:
    """One request to make: its messages, whether they go as one batch, and when it began."""

    items: list[Outgoing]
    #: True: ``POST /peer/batch`` with ``batch_body()``; False: Aphlict's ``POST /`` of one.
    batch: bool
    started: float

    def batch_body(self) -> bytes:
        """The batch carrying ``items`` (a record is encoded here for any that has none)."""
        return encode_batch(
            [
                item.record or encode_record(item.instance, b"[]", item.payload)
                for item in self.items
            ]
        )


class PeerLinkState:
    """One peer link's state machine: its queue, its state, batch sizing and backoff."""

    def __init__(
        self,
        name: str,
        peer: PeerConfig,
        settings: PeeringConfig,
        own_fingerprint: str,
        *,
        clock: Callable[[], float],
        backoff: RetryDelays | None = None,
        stranded: Stranded | None = None,
    ) -> None:
        """The link to ``peer`` (``name`` is its config entry, e.g. ``cluster[1]``).

        ``backoff`` spaces the retries while the peer is down (by default the
        ``peering`` settings' jittered exponential backoff). ``stranded`` is
        told, the moment the link goes down from up, the messages it holds
        unanswered (queued or in flight), oldest first.
        """
        self.name = name
        self.peer = peer
        self._own_fingerprint = own_fingerprint
        self._clock = clock
        self.outbox = Outbox(
            settings.queue_size, settings.queue_max_age_seconds, clock, settings.queue_max_bytes
        )
        self._backoff = backoff or Backoff(
            settings.backoff_initial_seconds, settings.backoff_max_seconds
        )
        self.state = PeerState.UNKNOWN
        self.fingerprint: str | None = None
        #: True once the peer's receipts say it takes batches (it is a relay node).
        self.batching = False
        self._batches_refused = False
        #: How many bytes a batch may hold now: it shrinks when a batch times out
        #: (a link too slow to carry a full one within the request deadline).
        self.batch_bytes = BATCH_BYTES
        #: Messages the peer accepted, and the POSTs that carried them.
        self.sent = 0
        self.requests = 0
        self.failed = 0
        self.last_error: str | None = None
        self.last_latency: float | None = None
        self._retry_at = 0.0
        #: Requests taken and not finished, and the messages they carry.
        self.in_flight = 0
        self._in_flight_messages = 0
        self._taken: list[list[Outgoing]] = []
        self._stranded = stranded

    def adopt(self, previous: PeerLinkState) -> None:
        """Carry on from ``previous``, the same peer's link before a reload renewed it.

        A reload with new peering settings or a new secret makes a new link,
        but the peer has not changed: its queued messages, what is known of it
        (state, fingerprint, batching) and its counters carry over, so nothing
        queued is lost, the node's own entry stays ``self`` and the counters
        never run backwards. The queue takes the new bounds (see
        ``Outbox.take_over``); backoff and batch sizing start afresh.
        """
        self.outbox.take_over(previous.outbox)
        self.state = previous.state
        self.fingerprint = previous.fingerprint
        self.batching = previous.batching
        self._batches_refused = previous._batches_refused
        self.sent = previous.sent
        self.requests = previous.requests
        self.failed = previous.failed
        self.last_error = previous.last_error
        self.last_latency = previous.last_latency

    # What the hub asks.

    def wants(self, covered: frozenset[str]) -> bool:
        """Whether a message the ``covered`` nodes have (or are being sent) should go here."""
        if self.state is PeerState.SELF:
            return False
        return self.fingerprint is None or self.fingerprint not in covered

    def offer(
        self,
        instance: str,
        payload: memoryview | bytes,
        record: bytes | None = None,
        covered: frozenset[str] | None = None,
    ) -> None:
        """Queue ``payload`` (and its batch ``record``, when one was encoded).

        ``covered``: the nodes that have it or are sent it otherwise, as the
        hub handed it on (a detour sends it through those outside it).
        """
        self.outbox.put(instance, payload, record, covered)

    @property
    def congested(self) -> bool:
        """True when the peer is up but its queue is full: the link is not keeping up."""
        return self.state is PeerState.UP and self.outbox.full

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight."""
        return not self.in_flight and not self.outbox

    # What the sender asks.

    def delay(self) -> float:
        """Seconds to wait before sending again (0: now); the backoff after a failure."""
        return max(0.0, self._retry_at - self._clock())

    @property
    def probing(self) -> bool:
        """True while the peer is not known to be up: one request at a time probes it."""
        return self.state is not PeerState.UP

    def take(self) -> list[Outgoing] | None:
        """The next message(s) to send, counted in flight until ``finish``; None: none now.

        A link in batch mode takes what is queued, up to a batch's size; a
        large message always travels alone. It keeps one request in flight:
        what queues up during a round trip goes out together in the next
        batch, which costs both nodes far less than a request per message, and
        the peer takes the messages in the order they were queued. Two
        requests in flight travel on two connections, and the peer may read
        the second first (or take it while the first fails, to be retried
        after it), so its browsers would get them out of order. A link whose
        round trip is long carries up to a full batch per round trip.
        """
        if self.batching and self.in_flight:
            return None
        first = self.outbox.take()
        if first is None:
            return None
        items = [first]
        if self.batching and len(first.payload) <= SOLO_BYTES:
            self._fill_batch(items)
        self.in_flight += 1
        self._in_flight_messages += len(items)
        self._taken.append(items)
        return items

    def _fill_batch(self, items: list[Outgoing]) -> None:
        size = len(items[0].payload)
        while len(items) < MAX_BATCH_MESSAGES and size < self.batch_bytes:
            item = self.outbox.take()
            if item is None:
                break
            if len(item.payload) > SOLO_BYTES:
                self.outbox.put_back(item)
                break
            items.append(item)
            size += len(item.payload)

    def start(self, items: list[Outgoing]) -> Post | None:
        """The request to make for ``items`` now, or None when they are not to be sent.

        None when the peer turned out to be this node (they are dropped), or
        when another probe failed while these waited their turn (they go back
        to the queue, for after the backoff).
        """
        if self.state is PeerState.SELF:
            return None
        now = self._clock()
        if now < self._retry_at:
            self.outbox.put_back_batch(items)
            return None
        # Several items were taken as a batch and go as one, even if the link
        # has since learned that the peer takes none: it will answer 404.
        batch = len(items) > 1 or (self.batching and len(items[0].payload) <= SOLO_BYTES)
        return Post(items, batch, now)

    def finish(self, items: list[Outgoing]) -> None:
        """``items``, from ``take``, are no longer in flight (whatever became of them)."""
        self.in_flight -= 1
        self._in_flight_messages -= len(items)
        for index, taken in enumerate(self._taken):
            if taken is items:
                del self._taken[index]
                break

    def holding(self) -> list[Outgoing]:
        """Every message not known to have reached the peer: in flight or queued, oldest first."""
        held = {item.seq: item for taken in self._taken for item in taken}
        held.update((item.seq, item) for item in self.outbox.queued())
        return [held[seq] for seq in sorted(held)]

    # How a request went.

    def answered(self, post: Post, status: int, receipt: bytes, capable: bool) -> None:
        """The peer answered ``post`` with ``status`` and ``receipt``.

        ``capable``: its answer carried the header saying it takes batches.
        """
        if post.batch and status == 200:
            self.batch_bytes = min(BATCH_BYTES, self.batch_bytes * 2)
        self.requests += 1
        self.last_latency = self._clock() - post.started
        if status >= 500:
            self._failed(post.items, f"HTTP {status}")
        elif post.batch and status in NO_BATCHES:
            self._no_batches(post.items, status)
        elif status != 200:
            self._refused(len(post.items), f"HTTP {status}: {_excerpt(receipt)}")
        else:
            self._succeeded(receipt_fingerprint(receipt), len(post.items), capable)

    def unanswered(self, post: Post, reason: str, *, timed_out: bool = False) -> None:
        """``post`` got no answer: ``reason`` says why (a line fit for the log and status)."""
        if timed_out and len(post.items) > 1:
            # Resent whole, the batch would time out again on a slow link: smaller
            # batches get through (and grow back once they do).
            self.batch_bytes = max(MIN_BATCH_BYTES, self.batch_bytes // 4)
        self._failed(post.items, reason)

    def _no_batches(self, items: list[Outgoing], status: int) -> None:
        """Not (or no longer) a relay node that takes batches: resend one by one.

        Its receipts' header is not believed again until it restarts.
        """
        self.batching = False
        self._batches_refused = True
        self.outbox.put_back_batch(items)
        log.info(
            "%s does not take batches (HTTP %d); posting one message at a time",
            self._label(),
            status,
            extra=self._context(),
        )

    def presence_answered(self, fingerprint: str | None) -> None:
        """A presence answer (mesh mode) carried ``fingerprint``: it may show this entry is us.

        Nothing else about the link changes: only messages' receipts say it is up.
        """
        if fingerprint == self._own_fingerprint and self.state is not PeerState.SELF:
            self._is_self()

    def _is_self(self) -> None:
        self.state = PeerState.SELF
        self.fingerprint = self._own_fingerprint
        self.outbox.clear()
        log.info(
            "%s is this node; it will not be sent messages", self._label(), extra=self._context()
        )

    def _succeeded(self, fingerprint: str | None, count: int, capable: bool) -> None:
        self.sent += count
        self._backoff.reset()
        self._retry_at = 0.0
        if fingerprint == self._own_fingerprint:
            self._is_self()
            return
        restarted = fingerprint is not None and self.fingerprint not in (None, fingerprint)
        self._learn_batching(capable, restarted)
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
                extra=self._context(),
            )
        elif restarted:
            log.info(
                "%s restarted (fingerprint %s)", self._label(), fingerprint, extra=self._context()
            )

    def _learn_batching(self, capable: bool, restarted: bool) -> None:
        """Whether to batch from now on, from a receipt's header (a restart forgives a refusal)."""
        if restarted:
            self._batches_refused = False
        capable = capable and not self._batches_refused
        if capable == self.batching:
            return
        self.batching = capable
        if self.state is PeerState.UP:
            # Up all along, yet a different program now: say what changed.
            log.info(
                "%s %s",
                self._label(),
                "takes batches" if capable else "does not take batches: one message per POST",
                extra=self._context(),
            )

    def _refused(self, count: int, reason: str) -> None:
        """The peer is alive but refuses the message(s); retrying will not help."""
        self.failed += 1
        self.outbox.dropped += count
        self.last_error = reason
        if self.state is not PeerState.REFUSED:
            self.state = PeerState.REFUSED
            log.warning("%s refuses messages: %s", self._label(), reason, extra=self._context())

    def _failed(self, items: list[Outgoing], reason: str) -> None:
        self.failed += 1
        self.last_error = reason
        self.outbox.put_back_batch(items)
        self._retry_at = self._clock() + self._backoff.next_delay()
        if self.state is not PeerState.DOWN:
            was_up = self.state is PeerState.UP
            self.state = PeerState.DOWN
            log.warning("%s is down: %s", self._label(), reason, extra=self._context())
            # While it was up, the other peers were told this node sends it these itself.
            if was_up and self._stranded is not None:
                self._stranded(self, self.holding())

    # What the node's readers see.

    def reading(self) -> PeerReading:
        """This link now, for ``/status/``, the metrics and the status page."""
        return PeerReading(
            host=self.peer.host,
            port=self.peer.port,
            protocol=self.peer.protocol,
            fingerprint=self.fingerprint,
            is_self=self.state is PeerState.SELF,
            state=self.state.value,
            batching=self.batching,
            sent=self.sent,
            requests=self.requests,
            failed=self.failed,
            dropped=self.outbox.dropped,
            queue=len(self.outbox),
            in_flight=self._in_flight_messages,
            last_error=self.last_error,
            last_latency_ms=None if self.last_latency is None else self.last_latency * 1000,
        )

    def _label(self) -> str:
        return f"peer {self.name} ({self.peer.url})"

    def _context(self) -> dict[str, str]:
        """The log record's context: which peer (log shippers index it)."""
        return {"peer": self.peer.url}


def receipt_fingerprint(receipt: bytes) -> str | None:
    """The fingerprint a peer's receipt carries (``{"fingerprint": ...}``), or None."""
    try:
        decoded = orjson.loads(receipt)
    except orjson.JSONDecodeError:
        return None
    fingerprint = decoded.get("fingerprint") if isinstance(decoded, dict) else None
    return fingerprint if isinstance(fingerprint, str) else None


def _excerpt(body: bytes) -> str:
    return body[:200].decode(errors="replace").strip()
