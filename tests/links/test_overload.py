"""The overload policy: refuse or drop while a peer link is congested; counted, logged once."""

from __future__ import annotations

import logging

import pytest

from relay.core.snapshot import OverloadReading
from relay.links.overload import OverloadGuard


def test_refuse_answers_no_while_congested_and_logs_each_episode_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = OverloadGuard("refuse")
    caplog.set_level(logging.INFO, "relay.overload")
    assert guard.admit([])
    assert [guard.admit(["cluster[1]"]) for _ in range(5)] == [False] * 5
    assert guard.reading() == OverloadReading(policy="refuse", active=True, refused=5, episodes=1)
    assert guard.admit([])
    assert not guard.admit(["cluster[2]"])
    assert guard.reading() == OverloadReading(policy="refuse", active=True, refused=6, episodes=2)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "peer queues full (cluster[1]): answering new posts 503 until they drain",
        "peer queues drained: taking posts again (5 refused in this episode)",
        "peer queues full (cluster[2]): answering new posts 503 until they drain",
    ]


def test_drop_takes_every_post_but_still_counts_episodes(caplog: pytest.LogCaptureFixture) -> None:
    guard = OverloadGuard("drop")
    caplog.set_level(logging.INFO, "relay.overload")
    assert all(guard.admit(["cluster[0]"]) for _ in range(3))
    assert guard.reading() == OverloadReading(policy="drop", active=True, refused=0, episodes=1)
    assert [record.getMessage() for record in caplog.records] == [
        "peer queues full (cluster[0]): dropping their oldest messages"
    ]
