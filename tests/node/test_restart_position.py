"""Where a broker-mode node stands when it stops for a restart (no Redis, no processes).

``stop_reading`` waits for the node's own posts to come back from Redis
before it stops the link: released unreturned, a post would reach the
browsers from this process and, following the position, from the next one.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from relay.broker.link import BrokerState
from relay.links.broker_wire import StreamId
from relay.node.restart_position import stop_reading

POSITION = ({"default": StreamId(1700, 2)}, 1600)


class FakeHub:
    """Posts held for the broker's order: each look at them, one more came back."""

    def __init__(self, held: int, *, returning: bool = True) -> None:
        self._held = held
        self._returning = returning

    @property
    def held(self) -> int:
        held = self._held
        if self._returning and self._held:
            self._held -= 1
        return held


class FakeBroker:
    """A link to Redis that is up, and notes when it was stopped."""

    def __init__(self, hub: FakeHub) -> None:
        self.config = SimpleNamespace(timeout_seconds=0.1)
        self.state = BrokerState.UP
        self.inbound = SimpleNamespace(position=lambda: POSITION)
        self.stopped_with_held: int | None = None
        self._hub = hub

    async def stop(self, grace: float) -> None:
        self.stopped_with_held = self._hub._held


def _node(hub: FakeHub) -> Any:
    return SimpleNamespace(hub=hub, broker=FakeBroker(hub))


async def test_the_link_stops_once_the_posts_held_are_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = _node(FakeHub(3))
    assert await stop_reading(node) == POSITION
    assert node.broker.stopped_with_held == 0
    assert "did not come back" not in caplog.text


async def test_posts_that_do_not_come_back_in_time_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = _node(FakeHub(2, returning=False))
    with caplog.at_level(logging.WARNING, logger="relay.restart"):
        assert await stop_reading(node) == POSITION  # after the broker's timeout, not forever
    assert node.broker.stopped_with_held == 2
    assert "2 posts did not come back from Redis before the restart" in caplog.text


async def test_no_wait_while_redis_is_away() -> None:
    node = _node(FakeHub(2, returning=False))
    node.broker.state = BrokerState.DOWN  # what is held is delivered here at once anyway
    node.broker.config.timeout_seconds = 3600.0
    assert await stop_reading(node) == POSITION


async def test_a_mesh_node_has_no_position() -> None:
    assert await stop_reading(SimpleNamespace(broker=None)) is None  # type: ignore[arg-type]
