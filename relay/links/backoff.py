"""Retry delays: what a retrying link expects of them, and exponential backoff with jitter.

A peer link that is down, the broker link while Redis is away and a worker
slot whose process keeps dying all wait between tries; each takes a
``RetryDelays``, and ``Backoff`` is the one they are given.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol


class RetryDelays(Protocol):
    """How long to wait before each retry: longer per failure, from scratch after a success."""

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before the next try."""

    def reset(self) -> None:
        """Forget past failures after a success."""


class Backoff:
    """Delays that double per consecutive failure up to a maximum, each jittered.

    Jitter spreads the retries of many nodes that lost the same peer at the
    same moment, so they do not all knock at once when it comes back.
    """

    def __init__(
        self, initial: float, maximum: float, rng: Callable[[], float] = random.random
    ) -> None:
        """Start at ``initial`` seconds, never exceed ``maximum``; ``rng`` returns [0, 1)."""
        self._initial = initial
        self._maximum = maximum
        self._rng = rng
        self.failures = 0

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before the next try."""
        base = min(self._maximum, self._initial * 2.0**self.failures)
        self.failures += 1
        # "Equal jitter": half the delay fixed, half random, so it never collapses to 0.
        return base / 2 + base / 2 * self._rng()

    def reset(self) -> None:
        """Forget past failures after a success."""
        self.failures = 0
