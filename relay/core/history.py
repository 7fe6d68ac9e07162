"""What each instance retains for ``replay``: the last N messages of the last T seconds.

History is per instance, so a replay never hands one tenant's messages to
another's browser (Aphlict keeps one list for all). Time is injected.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterable, Set
from typing import Any, NamedTuple

from relay.core.encoded import EncodedMessage


class Entry(NamedTuple):
    """One retained message: when it arrived, whom it was for, what was sent."""

    at: float
    subscribers: frozenset[str]
    message: EncodedMessage


class History:
    """Per-instance message history bounded by count and age."""

    def __init__(self, max_messages: int, max_age: float, clock: Callable[[], float]) -> None:
        """Keep at most ``max_messages`` per instance, none older than ``max_age`` seconds."""
        self._max_messages = max_messages
        self._max_age = max_age
        self._clock = clock
        self._by_instance: dict[str, deque[Entry]] = {}

    def resize(self, max_messages: int, max_age: float) -> None:
        """Apply new bounds (a config reload), keeping the newest messages that still fit."""
        self._max_messages = max_messages
        self._max_age = max_age
        for instance, entries in list(self._by_instance.items()):
            if max_messages == 0:
                del self._by_instance[instance]
            else:
                self._by_instance[instance] = deque(entries, maxlen=max_messages)

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
        if self._max_messages == 0:
            return
        now = self._clock()
        if at is None:
            at = now
        elif at < now - self._max_age:
            return
        entries = self._by_instance.get(instance)
        if entries is None:
            entries = self._by_instance[instance] = deque(maxlen=self._max_messages)
        entry = Entry(at, subscribers, message)
        if not entries or entries[-1].at <= at:
            entries.append(entry)
            return
        position = bisect.bisect_right(entries, at, key=lambda entry: entry.at)
        if len(entries) == entries.maxlen:
            if position == 0:
                return  # older than everything kept, and no room: it would go first
            entries.popleft()
            position -= 1
        entries.insert(position, entry)

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
            entries.popleft()
        if not entries:
            del self._by_instance[instance]
        return entries
