"""Retry delays for a peer that is down, Redis away, or a worker that keeps dying."""

from __future__ import annotations

import pytest

from relay.links.backoff import Backoff, RetryDelays


@pytest.mark.parametrize("jitter", [0.0, 0.5, 0.999])
def test_delays_double_up_to_the_maximum_with_bounded_jitter(jitter: float) -> None:
    backoff = Backoff(0.25, 4.0, rng=lambda: jitter)
    delays = [backoff.next_delay() for _ in range(8)]
    bases = [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    for delay, base in zip(delays, bases, strict=True):
        assert base / 2 <= delay <= base
        assert delay == pytest.approx(base / 2 + base / 2 * jitter)


def test_reset_starts_over() -> None:
    # Typed as what the peer, broker and worker links take (mypy checks that it fits).
    backoff: RetryDelays = Backoff(1.0, 60.0, rng=lambda: 0.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 0.5
    assert isinstance(backoff, Backoff)
    assert backoff.failures == 1
