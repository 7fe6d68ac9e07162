"""Messages waiting to leave the node: bounded, oldest dropped first, expiring with age.

Pure: no I/O, time injected. Each peer link keeps one for the messages it
forwards, taking them one at a time; the broker link keeps one for the
posts it publishes to Redis, taking them in batches. While the other side
is away messages pile up here; past ``capacity`` the oldest is dropped, and
one older than ``max_age`` is dropped when its turn comes (a replay would
not return it any more). Both are counted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Outgoing:
    """One message to send: the instance it belongs to, its bytes, when it was queued.

    ``record`` is the same message as a batch record for relay peers (see
    ``relay.links.peer_batch``), when one was encoded.
    """

    instance: str
    payload: memoryview | bytes
    queued_at: float
    record: bytes | None = None


class Outbox:
    """A bounded FIFO of outgoing messages, with a count of those it had to drop."""

    def __init__(self, capacity: int, max_age: float, clock: Callable[[], float]) -> None:
        """Hold at most ``capacity`` messages, none older than ``max_age`` seconds."""
        self._items: deque[Outgoing] = deque()
        self._capacity = capacity
        self._max_age = max_age
        self._clock = clock
        #: Messages never sent: the queue was full, or they waited too long.
        self.dropped = 0

    def put(self, instance: str, payload: memoryview | bytes, record: bytes | None = None) -> None:
        """Queue a message, dropping the oldest one when full."""
        if len(self._items) >= self._capacity:
            self._items.popleft()
            self.dropped += 1
        self._items.append(Outgoing(instance, payload, self._clock(), record))

    @property
    def full(self) -> bool:
        """True when one more message would push the oldest out."""
        return len(self._items) >= self._capacity

    def take(self) -> Outgoing | None:
        """The oldest message still fresh enough to send, or None."""
        batch = self.take_batch(1)
        return batch[0] if batch else None

    def take_batch(self, most: int) -> list[Outgoing]:
        """Up to ``most`` of the oldest messages still fresh enough, oldest first."""
        cutoff = self._clock() - self._max_age
        items = self._items
        batch: list[Outgoing] = []
        while items and len(batch) < most:
            item = items.popleft()
            if item.queued_at >= cutoff:
                batch.append(item)
            else:
                self.dropped += 1
        return batch

    def put_back(self, item: Outgoing) -> None:
        """Return a message whose send failed to the front, to be retried first."""
        self.put_back_batch([item])

    def put_back_batch(self, batch: list[Outgoing]) -> None:
        """Return a batch whose send failed to the front, in its order, to go first.

        Where newer messages filled the queue meanwhile, the oldest of the
        batch are the ones dropped.
        """
        room = self._capacity - len(self._items)
        keep = batch[max(0, len(batch) - room) :] if room > 0 else []
        self.dropped += len(batch) - len(keep)
        self._items.extendleft(reversed(keep))

    def clear(self) -> None:
        """Forget every queued message (a peer that turned out to be this node)."""
        self._items.clear()

    def __len__(self) -> int:
        """How many messages wait to be sent."""
        return len(self._items)
