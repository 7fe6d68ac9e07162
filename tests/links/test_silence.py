"""A subscription's proof of life: when it is pinged, when its silence means it is dead."""

from __future__ import annotations

from relay.links.silence import SilenceWatch
from tests.support import FakeClock


def test_a_quiet_subscription_is_pinged_each_interval_and_dead_after_the_bound() -> None:
    clock = FakeClock()
    watch = SilenceWatch(ping_interval=1.0, stale_after=3.0, now=clock.now)
    clock.advance(0.5)
    assert not watch.ping_due(clock.now)
    clock.advance(0.5)
    assert watch.ping_due(clock.now)
    assert not watch.ping_due(clock.now)  # sent: not again before the next interval
    clock.advance(1.0)
    assert watch.ping_due(clock.now)
    assert watch.silent_for(clock.now) is None
    clock.advance(1.0)
    assert watch.silent_for(clock.now) == 3.0  # no answer to either ping


def test_anything_heard_keeps_it_alive() -> None:
    clock = FakeClock()
    watch = SilenceWatch(ping_interval=1.0, stale_after=3.0, now=clock.now)
    for _ in range(10):
        clock.advance(2.5)
        assert watch.silent_for(clock.now) is None
        watch.heard(clock.now)  # a message, or a ping's answer
    clock.advance(3.0)
    assert watch.silent_for(clock.now) == 3.0
