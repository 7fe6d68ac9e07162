"""What a node's parts are built with: how long message identities are remembered."""

from __future__ import annotations

from relay.config import HistoryConfig, PeeringConfig
from relay.node.parts import dedup_window


def test_identities_are_remembered_twice_the_history_window() -> None:
    assert dedup_window(HistoryConfig(), PeeringConfig()) == 120
    assert dedup_window(HistoryConfig(max_age_seconds=90), PeeringConfig()) == 180


def test_identities_outlive_a_copy_that_waited_in_two_peer_queues() -> None:
    # A copy can wait up to queue_max_age_seconds in one peer's queue, and as long
    # again in the next one's along a detour, while the first copy came straight.
    peering = PeeringConfig(queue_max_age_seconds=300)
    assert dedup_window(HistoryConfig(), peering) >= 2 * 300
