"""What each instance retains for ``replay``: the last N messages of the last T seconds.

History is per instance, so a replay never hands one tenant's messages to
another's browser (Aphlict keeps one list for all). Time is injected.

The bytes retained are bounded too, all instances together: N messages of
up to ``admin_body_bytes`` each, in as many instances as posters name, would
otherwise hold gigabytes. Past the bound an instance's oldest messages make
room for its new one; an instance with none to give up (the others hold the
bytes) keeps no new message until older ones expire.
"""

from __future__ import annotations

import bisect
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
        #: The frames' bytes of every entry kept.
        self.bytes = 0
        #: Messages not kept because other instances held the byte bound.
        self.crowded_out = 0
        self._swept_at = float("-inf")
        self._warned = False

    def resize(self, max_messages: int, max_age: float, max_bytes: int) -> None:
        """Apply new bounds (a config reload), keeping the newest messages that still fit."""
        self._max_messages = max_messages
        self._max_age = max_age
        self._max_bytes = max_bytes
        for instance, entries in list(self._by_instance.items()):
            while entries and (len(entries) > max_messages or self.bytes > max_bytes):
                self._drop_oldest(entries)
            if not entries:
                del self._by_instance[instance]

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
    ) -> None:
        """Retain ``message`` for ``instance``, dropping the oldest past the bounds.

        ``at`` is when it arrived (the clock's reading; now when None). An
        earlier ``at`` than the newest entry's, as a message reloaded from the
        broker has, is placed in time order; one already past the age bound is
        not kept.
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
        entries = self._by_instance.get(instance)
        if entries is None:
            entries = self._by_instance[instance] = deque()
        if not entries or entries[-1].at <= at:
            position = len(entries)
        else:
            position = bisect.bisect_right(entries, at, key=lambda entry: entry.at)
        if self.bytes + size > self._max_bytes:
            self._bound_reached()
        # Room by count, then by bytes, made from this instance's oldest messages.
        while entries and (
            len(entries) >= self._max_messages or self.bytes + size > self._max_bytes
        ):
            if position == 0:
                return  # older than everything kept, and no room: it would go first
            self._drop_oldest(entries)
            position -= 1
        if self.bytes + size > self._max_bytes:
            self.crowded_out += 1  # the other instances hold the bytes
            if not entries:
                del self._by_instance[instance]
            return
        entries.insert(position, Entry(at, subscribers, message))
        self.bytes += size

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
            self._drop_oldest(entries)
        if not entries:
            del self._by_instance[instance]
        return entries

    def _bound_reached(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "history holds %d bytes of messages, its bound (history.max_bytes): from now on "
                "messages may leave it before their age or count bound, and an instance whose "
                "others hold the bytes keeps no new one until they expire (logged once)",
                self.bytes,
            )

    def _drop_oldest(self, entries: deque[Entry]) -> None:
        self.bytes -= len(entries.popleft().message.frame)
