"""The broker's receive path: frames from the subscription parsed once and handed to a real hub."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from relay.broker.receive import Inbound
from relay.config import LimitsConfig
from relay.core.dedup import RecentIds
from relay.core.encoded import EncodedMessage
from relay.core.history import History
from relay.core.hub import Hub, Outcome
from relay.core.notification import parse_notification
from relay.links.broker_wire import Keys, frame
from tests.support import FakeClock

KEYS = Keys("relay")
CHANNEL = KEYS.channel("default").encode()


class RecordingBrowser:
    instance = "default"

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

    def deliver(self, message: EncodedMessage) -> None:
        self.received.append(orjson.loads(message.payload))


def receiving_hub() -> tuple[Hub, RecordingBrowser]:
    clock = FakeClock()
    hub = Hub(
        fingerprint="HERE",
        history=History(100, 60, clock),
        recent=RecentIds(120, 1000, clock),
        clock=clock,
    )
    browser = RecordingBrowser()
    hub.connect(browser)
    hub.subscribe(browser, ["K"])
    return hub, browser


def message(**body: Any) -> bytes:
    return orjson.dumps({"subscribers": ["K"], "touched": ["THERE"], **body})


def test_a_message_from_another_node_reaches_the_hub_parsed_and_unchanged() -> None:
    hub, browser = receiving_hub()
    inbound = Inbound(KEYS, LimitsConfig(), FakeClock())
    payload = message(uniqueID="m1", extra=[1, 2])
    inbound.live(CHANNEL, frame(b"1700000000000-0", b"THERE", payload), hub)
    assert browser.received == [orjson.loads(payload)]
    assert hub.reading("default").history_size == 1
    assert inbound.received == 1


def test_this_nodes_own_posts_wait_for_redis_and_go_out_in_its_order() -> None:
    hub, browser = receiving_hub()
    inbound = Inbound(KEYS, LimitsConfig(), FakeClock())
    hub.set_ordering(True, hold_seconds=4.0)
    here = [parse_notification(orjson.dumps({"subscribers": ["K"], "uniqueID": "h0"}))]
    here.append(parse_notification(orjson.dumps({"subscribers": ["K"], "uniqueID": "h1"})))
    assert [hub.publish("default", post) for post in here] == [Outcome.HELD, Outcome.HELD]
    assert browser.received == []  # nothing before Redis gives it its place
    # Redis' order: the second post here, another node's, then the first post here.
    stamped = [EncodedMessage(post.stamped("HERE")).payload for post in here]
    inbound.live(CHANNEL, frame(b"1-0", b"HERE", bytes(stamped[1])), hub)
    inbound.live(CHANNEL, frame(b"2-0", b"THERE", message(uniqueID="t0")), hub)
    inbound.live(CHANNEL, frame(b"3-0", b"HERE", bytes(stamped[0])), hub)
    assert [m["uniqueID"] for m in browser.received] == ["h1", "t0", "h0"]
    assert hub.held == 0
    assert inbound.received == 3
    # A copy that comes again (a publish retried after a Redis fault) is not delivered twice.
    inbound.live(CHANNEL, frame(b"4-0", b"HERE", bytes(stamped[0])), hub)
    assert len(browser.received) == 3


def test_what_is_not_a_message_under_the_limits_is_logged_and_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub, browser = receiving_hub()
    inbound = Inbound(KEYS, LimitsConfig(max_subscribers=1), FakeClock())
    caplog.set_level(logging.WARNING, "relay.broker")
    inbound.live(CHANNEL, frame(b"1-0", b"THERE", message(subscribers=["K", "L"])), hub)
    inbound.live(CHANNEL, frame(b"2-0", b"THERE", b"{"), hub)
    inbound.live(CHANNEL, b"no frame", hub)
    inbound.set_limits(LimitsConfig(max_subscribers=2))
    inbound.live(CHANNEL, frame(b"3-0", b"THERE", message(subscribers=["K", "L"])), hub)
    assert [m["subscribers"] for m in browser.received] == [["K", "L"]]
    assert [record.getMessage() for record in caplog.records] == [
        'ignored a message from the broker: "subscribers" lists 2 keys; the limit is 1',
        "ignored a message from the broker: the body is not valid JSON: unexpected end of data",
        "ignored a malformed message on relay:messages:default",
    ]
    assert inbound.received == 3
