"""The messages waiting to be sent to one peer: bounded, oldest dropped first, expiring with age."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Outgoing:
    """One message for one peer: the instance to post it to and the bytes to post."""

    instance: str
    payload: memoryview | bytes
    queued_at: float


class Outbox:
    """A bounded FIFO of messages for a peer, with a count of those it had to drop."""

    def __init__(self, capacity: int, max_age: float, clock: Callable[[], float]) -> None:
        """Hold at most ``capacity`` messages, none older than ``max_age`` seconds."""
        self._items: deque[Outgoing] = deque()
        self._capacity = capacity
        self._max_age = max_age
        self._clock = clock
        #: Messages discarded because the queue was full or they grew too old.
        self.dropped = 0

    def put(self, instance: str, payload: memoryview | bytes) -> None:
        """Queue a message, dropping the oldest one when full."""
        if len(self._items) >= self._capacity:
            self._items.popleft()
            self.dropped += 1
        self._items.append(Outgoing(instance, payload, self._clock()))

    def put_back(self, item: Outgoing) -> None:
        """Return a message whose send failed to the front, to be retried first.

        If newer messages filled the queue meanwhile, this one is the oldest
        and is the one dropped.
        """
        if len(self._items) >= self._capacity:
            self.dropped += 1
            return
        self._items.appendleft(item)

    def take(self) -> Outgoing | None:
        """The oldest message still fresh enough to send, or None."""
        cutoff = self._clock() - self._max_age
        items = self._items
        while items:
            item = items.popleft()
            if item.queued_at >= cutoff:
                return item
            self.dropped += 1
        return None

    def clear(self) -> None:
        """Forget every queued message (the peer turned out to be this node)."""
        self._items.clear()

    def __len__(self) -> int:
        """How many messages wait to be sent."""
        return len(self._items)
