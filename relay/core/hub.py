"""The hub: where notifications are routed.

Listeners and peers feed it; it feeds history, the local browsers subscribed
to a message's keys, and the outbound peer links, in that one direction. It
does no I/O of its own: browsers are objects with a ``deliver`` method that
must not block, and peers are reached through the ``forward`` callable.

It also keeps Aphlict's per-instance counters, in bounded memory
(``relay.core.instance_counts``).

In broker mode, while the broker orders the cluster's messages
(``set_ordering``), a post is held (``relay.core.held``) and delivered when the
broker returns it, in the broker's order, like every other node's posts.
History keeps that order too (``relay.core.history.Place``): a post delivered
here before the broker placed it (Redis away) waits last in history until the
broker returns it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import orjson

from relay.config import LimitsConfig
from relay.core.dedup import RecentIds
from relay.core.encoded import EncodedMessage
from relay.core.held import HeldPosts, late_hold
from relay.core.history import History, Place
from relay.core.instance_counts import InstanceCounters, InstanceCounts
from relay.core.notification import Notification
from relay.core.snapshot import InstanceReading
from relay.core.subscriptions import SubscriptionIndex

log = logging.getLogger("relay.hub")

#: ``forward(instance, payload, covered)``: hand a stamped message on, except to the nodes
#: in ``covered``: those that have it (its ``touched`` list, this node included) and those
#: the node it came from is sending it to itself. The one name relay uses for that set; on
#: the wire between relay nodes it is a batch record's ``covered`` field.
Forward = Callable[[str, memoryview, frozenset[str]], None]


class Browser(Protocol):
    """What the hub needs of a browser connection."""

    instance: str

    def deliver(self, message: EncodedMessage) -> None:
        """Queue ``message`` for the browser without blocking."""


class Outcome(enum.Enum):
    """What the hub did with a posted notification."""

    DELIVERED = "delivered"
    #: This node's fingerprint was already in ``touched``: it came back around.
    LOOPED = "looped"
    #: The same message already arrived along another path.
    DUPLICATE = "duplicate"
    #: Accepted and handed to the broker; delivered here when the broker returns it.
    HELD = "held"


class Hub:
    """Routes notifications to history, local browsers and peers."""

    def __init__(
        self,
        *,
        fingerprint: str,
        history: History,
        recent: RecentIds,
        clock: Callable[[], float],
        limits: LimitsConfig | None = None,
        forward: Forward | None = None,
        brokered: bool = False,
    ) -> None:
        """Route with this node's ``fingerprint``; ``clock`` gives monotonic seconds.

        ``brokered``: a broker orders the cluster's messages (``receive``), so a
        post delivered here before the broker placed it waits for its place in history.
        """
        self.fingerprint = fingerprint
        # Where a post delivered at once goes in history: in a mesh there is no other order.
        self._unplaced = Place.WAITING if brokered else Place.IN_TIME
        self._limits = limits or LimitsConfig()
        self._history = history
        self._recent = recent
        self._clock = clock
        self._started = clock()
        self.forward = forward
        #: Told of each post or broker message delivered here (announcements aside), in order.
        self.routed: Callable[[str, EncodedMessage], None] | None = None
        self._index: SubscriptionIndex[Browser] = SubscriptionIndex()
        self._counts = InstanceCounts(clock, self._limits)
        self._latest_announcement: dict[tuple[str, str], EncodedMessage] = {}
        #: Posts written to browsers (replays, announcements aside): did a ``publish`` reach any.
        self.deliveries = 0
        self._held = HeldPosts(clock)
        self._ordered = False
        self._hold_seconds = 0.0
        self._debug = log.isEnabledFor(logging.DEBUG)

    def set_limits(self, limits: LimitsConfig) -> None:
        """Apply new subscription and replay limits (a config reload).

        Subscriptions already held past a lowered cap are kept; new ones are refused.
        """
        self._limits = self._counts.limits = limits

    @property
    def overflowed(self) -> int:
        """Posts, messages and browsers counted under the overflow label, not their own."""
        return self._counts.overflowed

    # Browsers.

    def connect(self, browser: Browser) -> None:
        """Count a browser that completed its handshake."""
        self._counts.browser_came(browser.instance)

    def disconnect(self, browser: Browser) -> None:
        """Forget a browser that went away, with all its subscriptions."""
        self._index.forget(browser)
        self._counts.browser_left(browser.instance)

    def subscribe(self, browser: Browser, keys: Sequence[str], *, catch_up: bool = True) -> int:
        """Subscribe ``browser`` to ``keys``; send it the latest announcement on each new key.

        Not with ``catch_up=False``: a browser taken over in a handoff has them.
        Keys longer than the key length limit, and keys past the per-connection
        subscription limit, are refused. Returns how many were refused.
        """
        short = [key for key in keys if len(key) <= self._limits.max_key_length]
        added, refused = self._index.subscribe(
            browser, browser.instance, short, self._limits.max_subscriptions
        )
        for key in added if catch_up else ():
            if (latest := self._latest_announcement.get((browser.instance, key))) is not None:
                browser.deliver(latest)
        return refused + len(keys) - len(short)

    def unsubscribe(self, browser: Browser, keys: Iterable[str]) -> None:
        """Unsubscribe ``browser`` from ``keys``."""
        self._index.unsubscribe(browser, keys)

    def keys_of(self, browser: Browser) -> frozenset[str]:
        """The keys ``browser`` listens to (a handoff passes them on with the connection)."""
        return self._index.keys_of(browser)

    def subscription_count(self, browser: Browser | None = None) -> int:
        """How many keys ``browser`` listens to; all browsers together when None."""
        return self._index.total if browser is None else self._index.count(browser)

    def replay(self, browser: Browser, age_ms: float) -> int:
        """Send ``browser`` the retained messages of the last ``age_ms`` for its keys, in order.

        At most ``limits.replay_bytes`` are sent: the newest messages that fit,
        oldest first, so a huge history neither floods the browser's buffer nor
        holds the node up. Returns how many were sent.
        """
        keys = self._index.keys_of(browser)
        messages = self._history.replay(browser.instance, keys, age_ms / 1000.0)
        budget = self._limits.replay_bytes
        start = len(messages)
        while start and len(messages[start - 1].frame) <= budget:
            start -= 1
            budget -= len(messages[start].frame)
        sent = sum(self._deliver_to((browser,), message) for message in messages[start:])
        self._counts.of(browser.instance).messages_out += sent
        return sent

    # Notifications.

    def publish(
        self,
        instance: str,
        notification: Notification,
        covered: frozenset[str] = frozenset(),
        *,
        resent: bool = False,
    ) -> Outcome:
        """Route a notification posted by an application server or a peer.

        A message that already carries this node's fingerprint, or that this
        node has seen recently under the same identity, is dropped: each node
        delivers a message once however many paths bring it. ``covered`` names
        nodes the sending peer reaches itself; they, the nodes in ``touched``
        and this node make up the ``covered`` set handed to ``forward``.

        ``resent``: the sending peer could not deliver it to a node it had
        said it would (``relay.links.detour``), and sends it again for this
        node to pass on. A repeat of that kind is forwarded, not delivered
        again, so that it reaches the node cut off ahead of what follows it.
        """
        counters = self._counts.of(instance)
        counters.messages_in += 1
        if self.fingerprint in notification.touched:
            return Outcome.LOOPED
        if not self._recent.first_sighting((instance, notification.identity())):
            if self._debug:
                log.debug("dropped a duplicate of %s", notification.identity())
            if resent and self.forward is not None:
                stamped = memoryview(notification.stamped(self.fingerprint))
                self.forward(instance, stamped, self._covered(notification, covered))
            return Outcome.DUPLICATE
        message = EncodedMessage(notification.stamped(self.fingerprint))
        outcome = Outcome.DELIVERED
        if self._ordered:
            key = (instance, notification.identity())
            self._held.hold(key, instance, notification.subscribers, message)
            outcome = Outcome.HELD
        else:
            self._keep_and_deliver(instance, notification.subscribers, message, self._unplaced)
        if self.forward is not None:
            self.forward(instance, message.payload, self._covered(notification, covered))
        return outcome

    def _covered(self, notification: Notification, covered: frozenset[str]) -> frozenset[str]:
        """The nodes a forwarded message skips: the sender's ``covered``, ``touched``, this one."""
        return covered | frozenset(notification.touched) | {self.fingerprint}

    def receive(
        self,
        instance: str,
        notification: Notification,
        payload: bytes,
        *,
        at: float | None = None,
        live: bool = True,
    ) -> Outcome:
        """Route a message another node published through the broker.

        It is kept and delivered exactly as its origin node encoded it
        (``payload``), and never passed on: every node receives it from the
        broker itself. Its identity is remembered as a posted one's is, so a
        copy arriving along another path (a peer's POST during a migration,
        a publish retried after a Redis failure) is dropped. ``at`` is when it
        entered the cluster, for a message reloaded from the broker's history;
        ``live=False`` only keeps it for replay. A post held here comes back
        this way too, and is delivered now, in its place in the broker's order.
        """
        held = self._held.take((instance, notification.identity())) if self._held else None
        if held is not None:
            self._keep_and_deliver(held.instance, held.subscribers, held.message, Place.NEXT)
            return Outcome.DELIVERED
        if self.fingerprint in notification.touched:
            # Posted here and delivered then, without waiting for the broker:
            # in history it takes its place in the broker's order now.
            if live:
                self._history.placed(instance, payload)
            return Outcome.LOOPED
        counters = self._counts.of(instance)
        if not self._recent.first_sighting((instance, notification.identity())):
            # A copy (a reload after a gap reads the window again, a retried
            # publish placed one twice) is not another message in.
            return Outcome.DUPLICATE
        counters.messages_in += 1
        message = EncodedMessage(payload)
        # Delivered now, in the broker's order: after every message placed before it,
        # whatever Redis' time and this node's say (a reload's messages carry Redis').
        place = Place.NEXT if live else Place.IN_TIME
        self._history.add(instance, notification.subscribers, message, at, place=place)
        if live:
            counters.messages_out += self._deliver(instance, notification.subscribers, message)
        return Outcome.DELIVERED

    def set_ordering(self, by_broker: bool, *, hold_seconds: float = 0.0) -> None:
        """Hold posts for the broker's order from now on, or (False) deliver at once again.

        Turned off when the broker goes away: what is held is delivered here
        at once, oldest first, so nothing waits for a Redis that is not there.
        While on, ``expire`` delivers here what was held longer than
        ``hold_seconds`` (a post Redis dropped, or that never came back).
        """
        self._ordered = by_broker
        self._hold_seconds = hold_seconds
        if not by_broker:
            self.release_held()

    def release_held(self, older_than: float | None = None) -> int:
        """Deliver here the held posts (those held longer than ``older_than`` seconds).

        For posts the broker will not return in time: Redis went away, or
        dropped them. Returns how many were delivered.
        """
        for post in (released := self._held.release(older_than)):
            self._keep_and_deliver(post.instance, post.subscribers, post.message, Place.WAITING)
        return len(released)

    @property
    def held(self) -> int:
        """Posts waiting for the broker to return them."""
        return len(self._held)

    def listened(self, instance: str, keys: Iterable[str]) -> bool:
        """Whether any browser here is subscribed to one of ``keys`` of ``instance``."""
        return any(True for _ in self._index.recipients(instance, keys))

    def _keep_and_deliver(
        self, instance: str, subscribers: frozenset[str], message: EncodedMessage, place: Place
    ) -> None:
        """Keep a post accepted here in history (at ``place``) and deliver it to its browsers."""
        self._history.add(instance, subscribers, message, place=place)
        delivered = self._deliver(instance, subscribers, message)
        # Counted where its post was (that instance's own, or the overflow label's).
        counters = self._counts.posted_in(instance)
        counters.messages_out += delivered
        self.deliveries += delivered

    def announce(self, instance: str, body: dict[str, Any]) -> None:
        """Deliver a message this node originates, such as its view of the Phorge cluster.

        Announcements stay on this node: they are not forwarded to peers (each
        node reports what it observes itself) nor kept in history; instead the
        latest one per key is sent to each browser the moment it subscribes.
        """
        message = EncodedMessage(orjson.dumps(body))
        for key in (subscribers := frozenset(body.get("subscribers", ()))):
            self._latest_announcement[(instance, key)] = message
        recipients = self._index.recipients(instance, subscribers)
        self._counts.of(instance).messages_out += self._deliver_to(recipients, message)

    def _deliver(self, instance: str, keys: Iterable[str], message: EncodedMessage) -> int:
        if self.routed is not None:  # a handoff passes it on, in this very order
            self.routed(instance, message)
        return self._deliver_to(self._index.recipients(instance, keys), message)

    def _deliver_to(self, browsers: Sequence[Browser], message: EncodedMessage) -> int:
        failed = 0
        # Once per delivery (8,000 times for 8 posts to 1,000 browsers): one call each, and
        # one broken connection or message must not cost the others theirs.
        for browser in browsers:
            try:
                browser.deliver(message)
            except Exception:
                log.exception("delivering a message to a browser failed")
                failed += 1
        return len(browsers) - failed

    # Upkeep and status.

    def expire(self) -> None:
        """Drop history past its age, forget idle instances, deliver late posts; call often.

        An instance is idle once it has no browser and nothing happened to it
        for as long as history keeps messages; its counts go to
        ``OVERFLOW_INSTANCE``, so that the node's totals never go down. Posts
        held for the broker's order longer than it promised are delivered here.
        """
        self._history.expire()
        self._counts.forget_idle(self._clock() - self._history.max_age)
        if self._ordered and self._held:
            late_hold(self.release_held(older_than=self._hold_seconds), self._hold_seconds)

    def uptime_ms(self) -> int:
        """Milliseconds since the hub was built."""
        return int((self._clock() - self._started) * 1000)

    @property
    def history_bytes(self) -> int:
        """Bytes of the frames retained for replay, over every instance."""
        return self._history.bytes

    def history_size(self, instance: str) -> int:
        """How many messages ``instance`` retains for replay."""
        return self._history.size(instance)

    def reading(self, instance: str) -> InstanceReading:
        """The counters and history of ``instance`` (zeros for one never seen)."""
        counters = self._counts.get(instance) or InstanceCounters()
        oldest = self._history.oldest_age(instance)
        return InstanceReading(
            clients_active=counters.clients_active,
            clients_total=counters.clients_total,
            messages_in=counters.messages_in,
            messages_out=counters.messages_out,
            history_size=self.history_size(instance),
            history_age_ms=None if oldest is None else int(oldest * 1000),
        )

    def readings(self) -> dict[str, InstanceReading]:
        """The reading of every instance seen so far."""
        return {instance: self.reading(instance) for instance in self._counts}

    def status(self, instance: str) -> dict[str, Any]:
        """The status Aphlict reports for ``instance``, key for key."""
        return self.reading(instance).aphlict_status(instance, self.uptime_ms())
