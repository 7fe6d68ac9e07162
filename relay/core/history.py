"""What each instance retains for ``replay``: the last N messages of the last T seconds.

History is per instance, so a replay never hands one tenant's messages to
another's browser (Aphlict keeps one list for all). Time is injected.

The bytes retained are bounded too, all instances together: N messages of
up to ``admin_body_bytes`` each, in as many instances as posters name, would
otherwise hold gigabytes. Past the bound the instance holding the most bytes
gives up its oldest messages (the one adding, when it holds at least an
equal share), so a busy instance cannot take a quiet one's history away.

In broker mode a replay gives the cluster's order, Redis', on every node: a
message delivered in that order goes after every message that has its place
(``Place.NEXT``), whatever its time says (a message reloaded after a gap
carries Redis' time, one that came live this node's: the two clocks cannot
order messages a millisecond apart). A post delivered here before Redis
placed it (Redis was away) waits last (``Place.WAITING``) until Redis returns
it (``placed``), then takes its place after the messages placed before it.
"""

from __future__ import annotations

import bisect
import enum
import logging
from collections import deque
from collections.abc import Callable, Iterable, Set
from typing import Any, NamedTuple

from relay.config.models import HISTORY_MAX_BYTES
from relay.core.encoded import EncodedMessage

log = logging.getLogger("relay.history")


class Entry(NamedTuple):
    """One retained message: when it arrived, whom it was for, what was sent."""

    at: float
    subscribers: frozenset[str]
    message: EncodedMessage


class Place(enum.Enum):
    """Where a message goes in its instance's history: the order a replay gives."""

    #: By when it arrived (``at``) among the messages that have their place; without
    #: an ``at``, that is after all of them. A message only kept, never delivered
    #: here (one a reload found older than this node), and a mesh's messages.
    IN_TIME = "in-time"
    #: After every message that has its place, whatever its ``at`` says (raised to
    #: keep times in order): delivered now, in the cluster's order.
    NEXT = "next"
    #: After everything, until ``History.placed`` gives it its place: delivered here
    #: before the broker placed it in the cluster's order (Redis was away).
    WAITING = "waiting"


#: The least time between two sweeps of every instance for a message that finds no room.
SWEEP_SECONDS = 1.0


class History:
    """Per-instance message history bounded by count and age, and by bytes in all."""

    def __init__(
        self,
        max_messages: int,
        max_age: float,
        clock: Callable[[], float],
        max_bytes: int = HISTORY_MAX_BYTES,
    ) -> None:
        """Keep at most ``max_messages`` per instance, none older than ``max_age`` seconds.

        And at most ``max_bytes`` of messages (their frames) in all.
        """
        self._max_messages = max_messages
        self._max_age = max_age
        self._max_bytes = max_bytes
        self._clock = clock
        self._by_instance: dict[str, deque[Entry]] = {}
        #: The frames' bytes of every entry kept, in all and by instance.
        self.bytes = 0
        self._bytes_of: dict[str, int] = {}
        #: How many of an instance's newest entries wait for their place (``Place.WAITING``).
        self._waiting: dict[str, int] = {}
        self._swept_at = float("-inf")
        self._warned = False

    def resize(self, max_messages: int, max_age: float, max_bytes: int) -> None:
        """Apply new bounds (a config reload), keeping the newest messages that still fit."""
        self._max_messages = max_messages
        self._max_age = max_age
        self._max_bytes = max_bytes
        for instance, entries in list(self._by_instance.items()):
            while len(entries) > max_messages:
                self._drop_oldest(instance)
        while self.bytes > max_bytes:
            self._drop_oldest(self._largest())

    @property
    def max_age(self) -> float:
        """Seconds a message is kept."""
        return self._max_age

    def add(
        self,
        instance: str,
        subscribers: frozenset[str],
        message: EncodedMessage,
        at: float | None = None,
        *,
        place: Place = Place.IN_TIME,
    ) -> None:
        """Retain ``message`` for ``instance``, dropping the oldest past the bounds.

        ``at`` is when it arrived (the clock's reading; now when None); one
        already past the age bound is not kept. ``place`` says where it goes
        (see ``Place``): by default in time order, so an ``at`` earlier than
        the newest entry's, as a message reloaded from the broker has, goes
        before that entry.
        """
        size = len(message.frame)
        if self._max_messages == 0 or size > self._max_bytes:
            return
        now = self._clock()
        if at is None:
            at = now
        elif at < now - self._max_age:
            return
        if self.bytes + size > self._max_bytes and now - self._swept_at >= SWEEP_SECONDS:
            # Expired messages of any instance may hold the bytes until the
            # housekeeping's next pass; at most one sweep a second on this path.
            self._swept_at = now
            self.expire()
        entries = self._by_instance.get(instance) or deque()
        placed = len(entries) - self._waiting.get(instance, 0)
        if place is Place.WAITING:
            position = len(entries)
        elif not placed or entries[placed - 1].at <= at:
            position = placed
        elif place is Place.NEXT:
            position, at = placed, entries[placed - 1].at
        else:
            position = bisect.bisect_right(entries, at, hi=placed, key=lambda entry: entry.at)
        # Room by count, from this instance's oldest; then by bytes, from the
        # instance holding the most (this one's oldest when that is this one).
        while len(entries) >= self._max_messages or self.bytes + size > self._max_bytes:
            if len(entries) >= self._max_messages:
                victim = instance
            else:
                self._bound_reached()
                victim = self._largest(instance)
            if victim == instance:
                if position == 0:
                    return  # older than everything it keeps, and no room: it would go first
                position -= 1
            self._drop_oldest(victim)
        entries.insert(position, Entry(at, subscribers, message))
        self._by_instance[instance] = entries
        self.bytes += size
        self._bytes_of[instance] = self._bytes_of.get(instance, 0) + size
        if place is Place.WAITING:
            self._waiting[instance] = self._waiting.get(instance, 0) + 1

    def placed(self, instance: str, payload: bytes | memoryview) -> bool:
        """Give the post ``payload`` (kept as ``Place.WAITING``) its place: the broker returned it.

        It goes after every message placed before it, as on every other node;
        the posts still waiting stay after it. Returns whether it was found
        (it may have gone with the bounds).
        """
        waiting = self._waiting.get(instance, 0)
        if not waiting:
            return False
        entries = self._by_instance[instance]
        first = len(entries) - waiting
        # Posts go to Redis in the order they were delivered: the first usually matches.
        for index in range(first, len(entries)):
            entry = entries[index]
            if entry.message.payload == payload:
                break
        else:
            return False
        del entries[index]
        if first:
            entry = entry._replace(at=max(entry.at, entries[first - 1].at))
        entries.insert(first, entry)
        self._waiting[instance] = waiting - 1
        return True

    def replay(self, instance: str, keys: Set[str], age: float) -> list[EncodedMessage]:
        """Messages of the last ``age`` seconds for any of ``keys``, oldest first."""
        entries = self._live(instance)
        if not entries or not keys:
            return []
        since = self._clock() - age
        return [
            entry.message
            for entry in entries
            if entry.at >= since and not entry.subscribers.isdisjoint(keys)
        ]

    def size(self, instance: str) -> int:
        """How many messages ``instance`` retains now."""
        return len(self._live(instance))

    def oldest_age(self, instance: str) -> float | None:
        """Seconds since the oldest retained message arrived, or None if there is none."""
        entries = self._live(instance)
        return self._clock() - entries[0].at if entries else None

    def expire(self) -> None:
        """Drop every message past its age in every instance, freeing the memory."""
        for instance in list(self._by_instance):
            self._live(instance)

    def export(self) -> list[list[Any]]:
        """Every message retained, as JSON-ready ``[instance, age, subscribers, payload]``.

        The age (seconds) rather than the clock's reading: another process
        (a restart) reads its own clock.
        """
        self.expire()
        now = self._clock()
        return [
            [
                instance,
                now - entry.at,
                sorted(entry.subscribers),
                str(entry.message.payload, "utf-8"),
            ]
            for instance, entries in self._by_instance.items()
            for entry in entries
        ]

    def restore(self, records: Iterable[Any], older_by: float = 0.0) -> int:
        """Retain again what :meth:`export` gave (``older_by`` seconds ago); return how many.

        A malformed record is skipped: a restart must not fail on its history.
        """
        now = self._clock()
        restored = 0
        for record in records:
            try:
                instance, age, subscribers, payload = record
                at = now - float(age) - older_by
                message = EncodedMessage(payload.encode() if isinstance(payload, str) else payload)
                self.add(str(instance), frozenset(map(str, subscribers)), message, at)
            except (TypeError, ValueError, AttributeError):
                continue
            restored += 1
        return restored

    def _live(self, instance: str) -> deque[Entry]:
        entries = self._by_instance.get(instance)
        if entries is None:
            return deque()
        cutoff = self._clock() - self._max_age
        while entries and entries[0].at < cutoff:
            self._drop_oldest(instance)
        return entries

    def _largest(self, adding: str | None = None) -> str:
        """The instance to give up bytes: ``adding`` if it holds an equal share or more.

        Else the one holding the most (a scan, only when the bound is reached).
        """
        held = self._bytes_of
        if adding is not None and held.get(adding, 0) * len(held) >= self.bytes:
            return adding
        return max(held, key=held.__getitem__)

    def _bound_reached(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "history reached its bound of %d bytes of messages (history.max_bytes): from "
                "now on the instance holding the most gives up its oldest messages before their "
                "age or count bound (logged once)",
                self._max_bytes,
            )

    def _drop_oldest(self, instance: str) -> None:
        """Forget ``instance``'s oldest message (and the instance, once it has none)."""
        entries = self._by_instance[instance]
        if len(entries) == self._waiting.get(instance, 0):
            self._waiting[instance] -= 1  # the oldest left was waiting for its place
        size = len(entries.popleft().message.frame)
        self.bytes -= size
        self._bytes_of[instance] -= size
        if not entries:
            del self._by_instance[instance]
            del self._bytes_of[instance]
            self._waiting.pop(instance, None)
