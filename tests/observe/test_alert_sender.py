"""The alert sender's looks, without a webhook: which node logs and queues an outage of Redis."""

from __future__ import annotations

import logging

import pytest

from relay.config.alerts import AlertsConfig
from relay.core.snapshot import BrokerReading, NodeSnapshot
from relay.observe.alerts import AlertSender
from tests.support import FakeClock

CONFIG = AlertsConfig(url="http://127.0.0.1:9/hook")


class Node:
    """A node's alert sender, its link to Redis and whether it speaks set by the test."""

    def __init__(self, name: str, clock: FakeClock) -> None:
        self.broker = "up"
        self.speaks = False
        self.sender = AlertSender(
            CONFIG,
            node=name,
            snapshot=self.snapshot,
            speaks=lambda: self.speaks,
            clock=clock,
            wall_clock=clock,
        )

    def snapshot(self) -> NodeSnapshot:
        reading = BrokerReading("redis://r:6379/0", self.broker, 1.0, None, 0, 0, 0, 0, 0, 0)
        return NodeSnapshot("fp", 0, 0, {}, 0, {}, [], None, broker=reading)

    def look(self, *, broker: str, speaks: bool) -> None:
        self.broker, self.speaks = broker, speaks
        self.sender.check()


def test_an_outage_longer_than_the_lease_is_logged_and_queued_by_one_node(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    old, new = Node("old", clock), Node("new", clock)
    caplog.set_level(logging.WARNING, logger="relay.alerts")
    old.look(broker="down", speaks=True)
    new.look(broker="down", speaks=False)
    clock.advance(5)  # the old holder's lease ran out: it speaks on about the outage
    old.look(broker="down", speaks=True)
    clock.advance(1)  # Redis back: the new node holds the lease, and sees it first
    new.look(broker="up", speaks=True)
    old.look(broker="up", speaks=True)
    clock.advance(1)
    old.look(broker="up", speaks=False)
    new.look(broker="up", speaks=True)
    assert [r.getMessage() for r in caplog.records] == [
        "alert firing: Redis redis://r:6379/0 is down",
        "alert resolved: Redis redis://r:6379/0 is down",
    ]
    assert old.sender.reading()["queue"] == 2
    assert new.sender.reading()["queue"] == 0


def test_a_node_that_did_not_tell_an_outage_does_not_end_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis back empty at once: the holder's renewal refused before it saw Redis down."""
    clock = FakeClock()
    old, new = Node("old", clock), Node("new", clock)
    caplog.set_level(logging.WARNING, logger="relay.alerts")
    old.look(broker="up", speaks=True)
    new.look(broker="down", speaks=False)
    clock.advance(1)
    old.look(broker="down", speaks=False)
    new.look(broker="down", speaks=True)
    clock.advance(1)
    old.look(broker="up", speaks=False)
    new.look(broker="up", speaks=True)
    assert caplog.records == []
