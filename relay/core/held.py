"""Posts held for their place in the cluster's order: delivered when the broker returns them.

In broker mode, while Redis is up, a node does not deliver what was posted to
it at once: it publishes the post and delivers it when it comes back through
the subscription, in the order Redis gave every node's posts, as every other
node does. Until then the post waits here, under its identity. When Redis goes
away, or a post does not come back within a bound, the node delivers what
waits here itself, oldest first: nothing is lost, only the order is then local.

Pure: no I/O, time injected.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from relay.core.encoded import EncodedMessage

log = logging.getLogger("relay.hub")

#: A post's key here: its instance and its identity (``Notification.identity()``).
HeldKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class HeldPost:
    """A post accepted here and published, not delivered yet."""

    instance: str
    subscribers: frozenset[str]
    message: EncodedMessage
    #: When it was accepted, on the hub's clock.
    accepted_at: float


class HeldPosts:
    """The posts waiting for the broker to return them, oldest first."""

    def __init__(self, clock: Callable[[], float]) -> None:
        """Hold posts; ``clock`` gives monotonic seconds."""
        self._clock = clock
        self._posts: OrderedDict[HeldKey, HeldPost] = OrderedDict()

    def hold(
        self, key: HeldKey, instance: str, subscribers: frozenset[str], message: EncodedMessage
    ) -> None:
        """Keep a post until ``take`` or ``release`` hands it out."""
        self._posts[key] = HeldPost(instance, subscribers, message, self._clock())

    def take(self, key: HeldKey) -> HeldPost | None:
        """The post under ``key``, which the broker just returned (None if not held)."""
        return self._posts.pop(key, None)

    def release(self, older_than: float | None = None) -> list[HeldPost]:
        """Every post held (or held longer than ``older_than`` seconds), oldest first."""
        if older_than is None:
            released = list(self._posts.values())
            self._posts.clear()
            return released
        cutoff = self._clock() - older_than
        released = []
        while self._posts:
            key, post = next(iter(self._posts.items()))
            if post.accepted_at > cutoff:
                break
            del self._posts[key]
            released.append(post)
        return released

    def __len__(self) -> int:
        """How many posts wait."""
        return len(self._posts)


def late_hold(count: int, hold_seconds: float) -> None:
    """Say that ``count`` posts were delivered without waiting longer for the broker's order."""
    if count:
        log.warning(
            "delivered %d %s here without the broker's order: "
            "Redis did not return %s within %.1f s",
            count,
            "post" if count == 1 else "posts",
            "it" if count == 1 else "them",
            hold_seconds,
        )
