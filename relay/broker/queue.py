"""The posts waiting to be published: bounded, oldest dropped first, expiring with age.

Pure: no I/O, time injected. While Redis is away posts pile up here; past
``capacity`` the oldest is dropped, and one older than ``max_age`` is dropped
when its turn comes (a replay would not return it any more). Both are counted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Pending:
    """One post to publish: its instance, the message as this node encoded it, when it came."""

    instance: str
    payload: memoryview | bytes
    queued_at: float


class PublishQueue:
    """A bounded FIFO of posts for Redis, with a count of those it had to drop."""

    def __init__(self, capacity: int, max_age: float, clock: Callable[[], float]) -> None:
        """Hold at most ``capacity`` posts, none older than ``max_age`` seconds."""
        self._items: deque[Pending] = deque()
        self._capacity = capacity
        self._max_age = max_age
        self._clock = clock
        #: Posts never published: the queue was full, or they waited too long.
        self.dropped = 0

    def put(self, instance: str, payload: memoryview | bytes) -> None:
        """Queue a post, dropping the oldest when full."""
        if len(self._items) >= self._capacity:
            self._items.popleft()
            self.dropped += 1
        self._items.append(Pending(instance, payload, self._clock()))

    def take(self, most: int) -> list[Pending]:
        """Up to ``most`` of the oldest posts still fresh enough, oldest first."""
        cutoff = self._clock() - self._max_age
        items = self._items
        batch: list[Pending] = []
        while items and len(batch) < most:
            item = items.popleft()
            if item.queued_at >= cutoff:
                batch.append(item)
            else:
                self.dropped += 1
        return batch

    def put_back(self, batch: list[Pending]) -> None:
        """Return a batch whose publish failed to the front, in its order, to go first.

        Where newer posts filled the queue meanwhile, the oldest of the batch
        are the ones dropped.
        """
        room = self._capacity - len(self._items)
        keep = batch[max(0, len(batch) - room) :] if room > 0 else []
        self.dropped += len(batch) - len(keep)
        self._items.extendleft(reversed(keep))

    def __len__(self) -> int:
        return len(self._items)
