"""The cluster-status lease's pure decisions, on a fake clock."""

from __future__ import annotations

import pytest

from relay.links.lease import Fence, Lease, LeaseAction, LeaseChange


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_node_takes_renews_and_keeps_the_lease() -> None:
    clock = Clock()
    lease = Lease(3.0, clock)
    assert lease.interval == 1.0
    assert lease.action() is LeaseAction.TAKE
    assert not lease.holding
    assert lease.took(7, sent_at=clock.now) is LeaseChange.ACQUIRED
    assert lease.holding
    assert lease.token == 7
    assert lease.action() is LeaseAction.RENEW
    clock.now += 2.0
    lease.renewed(sent_at=clock.now)
    clock.now += 2.9
    assert lease.expire() is None
    assert lease.holding


def test_the_lease_runs_out_from_the_last_command_sent_not_answered() -> None:
    clock = Clock()
    lease = Lease(3.0, clock)
    lease.took(1, sent_at=clock.now - 1.0)  # the answer came a second late
    clock.now += 1.9
    assert lease.failed() is None
    assert lease.holding
    clock.now += 0.1
    assert not lease.holding
    assert lease.failed() is LeaseChange.LOST
    assert lease.lost_to_outage
    assert lease.token is None
    assert lease.failed() is None  # lost once
    assert lease.action() is LeaseAction.TAKE


def test_a_refused_renewal_loses_the_lease_at_once() -> None:
    clock = Clock()
    lease = Lease(3.0, clock)
    assert lease.refused() is None
    lease.took(2, sent_at=clock.now)
    assert lease.refused() is LeaseChange.LOST
    assert not lease.holding
    assert not lease.lost_to_outage


def test_release_and_renewal_without_a_lease() -> None:
    clock = Clock()
    lease = Lease(3.0, clock)
    lease.renewed(sent_at=clock.now)
    assert not lease.holding
    lease.took(3, sent_at=clock.now)
    assert lease.released() is LeaseChange.LOST
    assert lease.released() is None


def test_taking_again_after_an_outage_clears_it() -> None:
    clock = Clock()
    lease = Lease(1.0, clock)
    lease.took(1, sent_at=clock.now)
    clock.now += 5
    assert lease.failed() is LeaseChange.LOST
    assert lease.lost_to_outage
    lease.took(4, sent_at=clock.now)
    assert not lease.lost_to_outage


def test_a_lease_needs_time() -> None:
    with pytest.raises(ValueError, match="positive"):
        Lease(0, Clock())


def test_the_fence_ignores_an_older_holder() -> None:
    fence = Fence()
    assert fence.admit(3)
    assert fence.admit(3)  # the same holder again
    assert fence.admit(5)
    assert not fence.admit(4)
    assert fence.highest == 5
