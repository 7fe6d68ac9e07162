"""Messages waiting to leave the node: bounded, oldest dropped first, expiring with age.

Pure: no I/O, time injected. Each peer link keeps one for the messages it
forwards, taking them one at a time; the broker link keeps one for the
posts it publishes to Redis, taking them in batches. While the other side
is away messages pile up here; past ``capacity`` messages or ``max_bytes``
the oldest is dropped, and one older than ``max_age`` is dropped when its
turn comes (a replay would not return it any more). All are counted. Messages
leave in the order they were queued, also when a send fails and they come
back: each holds its place in line (``seq``), and goes back to it. The
byte bound matters for large posts: 10,000 of up to ``admin_body_bytes``
each would otherwise be gigabytes, queued for a Redis or a peer that is away.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

from relay.config.broker import QUEUE_MAX_BYTES


@dataclass(slots=True)
class Outgoing:
    """One message to send: the instance it belongs to, its bytes, when it was queued.

    ``record`` is the same message as a batch record for relay peers (see
    ``relay.links.peer_batch``), when one was encoded, and ``covered`` the
    nodes that had it or were sent it otherwise when it was queued (a peer
    link's, see ``relay.links.detour``). ``seq`` is its place in its outbox's line.
    """

    instance: str
    payload: memoryview | bytes
    queued_at: float
    record: bytes | None = None
    covered: frozenset[str] | None = None
    seq: int = 0

    @property
    def size(self) -> int:
        """The bytes it holds: the payload, and the record when there is one."""
        return len(self.payload) + (len(self.record) if self.record is not None else 0)


class Outbox:
    """A bounded FIFO of outgoing messages, with a count of those it had to drop."""

    def __init__(
        self,
        capacity: int,
        max_age: float,
        clock: Callable[[], float],
        max_bytes: int = QUEUE_MAX_BYTES,
    ) -> None:
        """Hold at most ``capacity`` messages and ``max_bytes``, none older than ``max_age`` s."""
        self._items: deque[Outgoing] = deque()
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._clock = clock
        #: The bytes of every message queued.
        self.bytes = 0
        self._last_size = 0
        self._next_seq = 0
        #: Messages never sent: the queue was full, or they waited too long.
        self.dropped = 0

    def put(
        self,
        instance: str,
        payload: memoryview | bytes,
        record: bytes | None = None,
        covered: frozenset[str] | None = None,
    ) -> None:
        """Queue a message, dropping the oldest ones when full."""
        self._append(Outgoing(instance, payload, self._clock(), record, covered))

    def _append(self, item: Outgoing) -> None:
        size = item.size
        if size > self._max_bytes:
            self.dropped += 1  # it alone would pass the bound
            return
        item.seq = self._next_seq
        self._next_seq += 1
        self._last_size = size
        while self._items and (
            len(self._items) >= self._capacity or self.bytes + size > self._max_bytes
        ):
            self._popleft()
            self.dropped += 1
        self._items.append(item)
        self.bytes += size

    @property
    def full(self) -> bool:
        """True when one more message (of the last one's size) would push the oldest out."""
        items = self._items
        return len(items) >= self._capacity or (
            bool(items) and self.bytes + self._last_size > self._max_bytes
        )

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
            item = self._popleft()
            if item.queued_at >= cutoff:
                batch.append(item)
            else:
                self.dropped += 1
        return batch

    def put_back(self, item: Outgoing) -> None:
        """Return a message whose send failed to the front, to be retried first."""
        self.put_back_batch([item])

    def put_back_batch(self, batch: list[Outgoing]) -> None:
        """Return a batch whose send failed to its place in line, in its order, to go first.

        Its place is in front of everything queued after it. Another batch
        taken after it and put back before it (several sends in flight, the
        later one failing first) stays behind it, so a retry never reorders
        what was queued. Where newer messages filled the queue meanwhile, the
        oldest of the batch are the ones dropped.
        """
        room, room_bytes = self._capacity - len(self._items), self._max_bytes - self.bytes
        start = len(batch)
        while start and room > 0 and batch[start - 1].size <= room_bytes:
            start -= 1
            room -= 1
            room_bytes -= batch[start].size
        keep = batch[start:]
        self.dropped += start
        if not keep:
            return
        self.bytes += sum(item.size for item in keep)
        items = self._items
        ahead = []  # queued messages that were in line before the batch's last one
        while items and items[0].seq < keep[-1].seq:
            ahead.append(items.popleft())
        if ahead:
            keep = sorted(keep + ahead, key=attrgetter("seq"))
        items.extendleft(reversed(keep))

    def queued(self) -> list[Outgoing]:
        """Every message waiting, oldest first (a copy: taking from it takes nothing here)."""
        return list(self._items)

    def room(self) -> tuple[int, int]:
        """How many more messages, and bytes, fit before the oldest would be pushed out."""
        return self._capacity - len(self._items), self._max_bytes - self.bytes

    def take_over(self, previous: Outbox) -> None:
        """Queue, in their order, ``previous``'s messages (a link renewed by a reload).

        They keep their age, and count toward this outbox's bounds, which may
        be smaller than ``previous``'s: past them the oldest are dropped
        (counted). ``previous``'s drops are counted here too, and it is left empty.
        """
        self.dropped += previous.dropped
        for item in previous._items:
            self._append(item)
        previous.clear()
        previous.dropped = 0

    def clear(self) -> None:
        """Forget every queued message (a peer that turned out to be this node)."""
        self._items.clear()
        self.bytes = 0

    def _popleft(self) -> Outgoing:
        item = self._items.popleft()
        self.bytes -= item.size
        return item

    def __len__(self) -> int:
        """How many messages wait to be sent."""
        return len(self._items)
