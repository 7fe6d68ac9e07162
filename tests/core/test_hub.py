"""The hub's routing, with recording browsers instead of sockets."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from relay.config import LimitsConfig
from relay.core.dedup import RecentIds
from relay.core.encoded import EncodedMessage
from relay.core.history import History
from relay.core.hub import Hub, Outcome
from relay.core.notification import parse_notification
from tests.support import FakeClock, notification


class RecordingBrowser:
    def __init__(self, instance: str = "default") -> None:
        self.instance = instance
        self.received: list[dict[str, Any]] = []

    def deliver(self, message: EncodedMessage) -> None:
        self.received.append(orjson.loads(message.payload))


def make_hub(
    clock: FakeClock | None = None, *, brokered: bool = False
) -> tuple[Hub, list[tuple[str, bytes, frozenset[str]]]]:
    clock = clock or FakeClock()
    forwarded: list[tuple[str, bytes, frozenset[str]]] = []
    hub = Hub(
        fingerprint="SELF",
        history=History(100, 60, clock),
        recent=RecentIds(120, 1000, clock),
        clock=clock,
        forward=lambda *args: forwarded.append(args),
        brokered=brokered,
    )
    return hub, forwarded


def post(hub: Hub, body: dict[str, Any], instance: str = "default") -> Outcome:
    return hub.publish(instance, parse_notification(orjson.dumps(body)))


def test_publish_reaches_subscribers_once_and_is_stamped() -> None:
    hub, forwarded = make_hub()
    both, one, none = RecordingBrowser(), RecordingBrowser(), RecordingBrowser()
    for browser in (both, one, none):
        hub.connect(browser)
    hub.subscribe(both, ["A", "B"])
    hub.subscribe(one, ["B"])
    assert post(hub, {"subscribers": ["A", "B"], "uniqueID": "u1"}) is Outcome.DELIVERED
    assert [m["uniqueID"] for m in both.received] == ["u1"]
    assert [m["touched"] for m in one.received] == [["SELF"]]
    assert none.received == []
    assert forwarded[0][0] == "default"
    assert forwarded[0][2] == {"SELF"}
    assert orjson.loads(forwarded[0][1])["touched"] == ["SELF"]


def test_a_message_already_touched_by_this_node_is_dropped() -> None:
    hub, forwarded = make_hub()
    browser = RecordingBrowser()
    hub.connect(browser)
    hub.subscribe(browser, ["A"])
    assert post(hub, {"subscribers": ["A"], "touched": ["OTHER", "SELF"]}) is Outcome.LOOPED
    assert browser.received == []
    assert forwarded == []


def test_a_repeat_by_another_path_is_delivered_once() -> None:
    hub, forwarded = make_hub()
    browser = RecordingBrowser()
    hub.connect(browser)
    hub.subscribe(browser, ["A"])
    assert post(hub, {"subscribers": ["A"], "uniqueID": "u", "touched": ["N1"]}).name == "DELIVERED"
    assert post(hub, {"subscribers": ["A"], "uniqueID": "u", "touched": ["N2"]}).name == "DUPLICATE"
    assert len(browser.received) == 1
    assert len(forwarded) == 1
    assert hub.status("default")["history.size"] == 1
    assert hub.status("default")["messages.in"] == 2


def test_a_resent_repeat_is_passed_on_not_delivered_again() -> None:
    # A peer sent it here saying it would reach N3 itself, then could not: it sends
    # it again for this node to pass on to N3 (relay.links.detour).
    hub, forwarded = make_hub()
    browser = RecordingBrowser()
    hub.connect(browser)
    hub.subscribe(browser, ["A"])
    body = orjson.dumps({"subscribers": ["A"], "uniqueID": "u", "touched": ["N1"]})
    assert hub.publish("default", parse_notification(body), frozenset({"N3"})) is Outcome.DELIVERED
    assert forwarded[-1][2] == {"N1", "N3", "SELF"}
    again = hub.publish("default", parse_notification(body), frozenset(), resent=True)
    assert again is Outcome.DUPLICATE
    assert len(browser.received) == 1
    assert hub.status("default")["history.size"] == 1
    assert len(forwarded) == 2
    instance, payload, covered = forwarded[-1]
    assert (instance, covered) == ("default", frozenset({"N1", "SELF"}))
    assert orjson.loads(payload)["touched"] == ["N1", "SELF"]
    # Sent again from a node it went through already, it goes no further.
    looped = orjson.dumps({"subscribers": ["A"], "uniqueID": "u", "touched": ["N1", "SELF"]})
    assert hub.publish("default", parse_notification(looped), resent=True) is Outcome.LOOPED
    assert len(forwarded) == 2


def test_same_unique_id_in_two_instances_is_two_messages() -> None:
    hub, _ = make_hub()
    acme, other = RecordingBrowser("acme"), RecordingBrowser("other")
    for browser in (acme, other):
        hub.connect(browser)
        hub.subscribe(browser, ["A"])
    post(hub, {"subscribers": ["A"], "uniqueID": "u"}, "acme")
    post(hub, {"subscribers": ["A"], "uniqueID": "u"}, "other")
    assert len(acme.received) == len(other.received) == 1


def test_replay_sends_only_this_instance_and_these_keys() -> None:
    clock = FakeClock()
    hub, _ = make_hub(clock)
    post(hub, {"subscribers": ["A"], "n": 1}, "acme")
    post(hub, {"subscribers": ["B"], "n": 2}, "acme")
    post(hub, {"subscribers": ["A"], "n": 3}, "other")
    clock.advance(1)
    browser = RecordingBrowser("acme")
    hub.connect(browser)
    hub.subscribe(browser, ["A"])
    assert hub.replay(browser, 60_000) == 1
    assert [m["n"] for m in browser.received] == [1]


def test_one_failing_browser_does_not_cost_the_others() -> None:
    hub, _ = make_hub()

    class Broken(RecordingBrowser):
        def deliver(self, message: EncodedMessage) -> None:
            raise RuntimeError("boom")

    broken, fine = Broken(), RecordingBrowser()
    for browser in (broken, fine):
        hub.connect(browser)
        hub.subscribe(browser, ["A"])
    post(hub, {"subscribers": ["A"]})
    assert len(fine.received) == 1


def test_announcements_stay_local_and_reach_late_subscribers() -> None:
    hub, forwarded = make_hub()
    early = RecordingBrowser()
    hub.connect(early)
    hub.subscribe(early, ["status"])
    hub.announce("default", {"subscribers": ["status"], "state": 1})
    hub.announce("default", {"subscribers": ["status"], "state": 2})
    late = RecordingBrowser()
    hub.connect(late)
    hub.subscribe(late, ["status"])
    hub.subscribe(late, ["status"])
    assert [m["state"] for m in early.received] == [1, 2]
    assert [m["state"] for m in late.received] == [2]
    assert forwarded == []
    assert hub.status("default")["history.size"] == 0


def test_a_browser_taken_over_in_a_handoff_is_not_sent_the_announcements_again() -> None:
    hub, _ = make_hub()
    hub.announce("default", {"subscribers": ["status"], "state": 1})
    adopted = RecordingBrowser()
    hub.connect(adopted)
    hub.subscribe(adopted, ["status"], catch_up=False)  # it got state 1 from the old process
    hub.announce("default", {"subscribers": ["status"], "state": 2})
    assert [m["state"] for m in adopted.received] == [2]


def test_status_counts_clients_and_messages_per_instance() -> None:
    clock = FakeClock()
    hub, _ = make_hub(clock)
    browser = RecordingBrowser("acme")
    hub.connect(browser)
    hub.subscribe(browser, ["A"])
    post(hub, {"subscribers": ["A"]}, "acme")
    clock.advance(2.5)
    hub.disconnect(browser)
    status = hub.status("acme")
    assert status == {
        "instance": "acme",
        "uptime": 2500,
        "clients.active": 0,
        "clients.total": 1,
        "messages.in": 1,
        "messages.out": 1,
        "version": 7,
        "history.size": 1,
        "history.age": 2500,
    }
    assert hub.status("unknown")["clients.total"] == 0


def test_a_message_that_fails_to_deliver_does_not_stop_the_replay() -> None:
    hub, _ = make_hub()
    for n in range(5):
        post(hub, {"subscribers": ["A"], "n": n})

    class Picky(RecordingBrowser):
        def deliver(self, message: EncodedMessage) -> None:
            body = orjson.loads(message.payload)
            if body["n"] == 2:
                raise ValueError("cannot take this one")
            super().deliver(message)

    browser = Picky()
    hub.connect(browser)
    hub.subscribe(browser, ["A"])
    assert hub.replay(browser, 60_000) == 4
    assert [m["n"] for m in browser.received] == [0, 1, 3, 4]


def test_replay_of_a_huge_history_is_bounded_and_keeps_the_newest_in_order() -> None:
    clock = FakeClock()
    hub = Hub(
        fingerprint="SELF",
        history=History(4096, 60, clock),
        recent=RecentIds(120, 10_000, clock),
        clock=clock,
        limits=LimitsConfig(replay_bytes=64 * 1024),
    )
    for n in range(4096):
        post(hub, {"subscribers": ["A"], "n": n, "pad": "x" * 1000})
    browser = RecordingBrowser()
    hub.connect(browser)
    hub.subscribe(browser, ["A"])
    sent = hub.replay(browser, 60_000)
    numbers = [m["n"] for m in browser.received]
    assert 0 < sent < 4096
    assert numbers == list(range(4096 - sent, 4096))  # the newest, oldest first
    assert sum(len(orjson.dumps(m)) for m in browser.received) <= 64 * 1024


def test_instances_only_browsers_named_are_forgotten_with_them() -> None:
    hub, _ = make_hub()
    browsers = [RecordingBrowser(f"made-up-{n}") for n in range(200)]
    for browser in browsers:
        hub.connect(browser)
        hub.subscribe(browser, [])
        hub.subscribe(browser, ["K" * 1000])  # refused: too long
    kept = RecordingBrowser("real")
    hub.connect(kept)
    hub.subscribe(kept, ["A"])
    post(hub, {"subscribers": ["A"]}, "real")
    for browser in browsers:
        hub.disconnect(browser)
    assert set(hub.readings()) == {"real"}
    assert set(hub._index._by_instance) == {"real"}
    hub.disconnect(kept)
    assert hub.status("real")["clients.total"] == 1  # posted to: its counters stay


def from_broker(
    hub: Hub, body: dict[str, Any], *, at: float | None = None, live: bool = True
) -> Outcome:
    payload = orjson.dumps(body)
    return hub.receive("default", parse_notification(payload), payload, at=at, live=live)


def test_a_broker_message_is_delivered_as_encoded_kept_and_never_passed_on() -> None:
    hub, forwarded = make_hub()
    browser = RecordingBrowser()
    hub.connect(browser)
    hub.subscribe(browser, ["K"])
    body = {"subscribers": ["K"], "uniqueID": "b1", "touched": ["OTHER"]}
    assert from_broker(hub, body) is Outcome.DELIVERED
    assert browser.received == [body]  # not re-stamped: the origin's bytes as they are
    assert forwarded == []
    # Its own message coming back, and a second copy along another path, are dropped.
    assert from_broker(hub, {**body, "touched": ["OTHER", "SELF"]}) is Outcome.LOOPED
    assert post(hub, {"subscribers": ["K"], "uniqueID": "b1"}) is Outcome.DUPLICATE
    assert from_broker(hub, body) is Outcome.DUPLICATE
    assert len(browser.received) == 1
    assert hub.status("default")["history.size"] == 1


def test_a_reloaded_broker_message_is_history_not_news() -> None:
    clock = FakeClock()
    hub, _ = make_hub(clock)
    browser = RecordingBrowser()
    hub.connect(browser)
    hub.subscribe(browser, ["K"])
    body = {"subscribers": ["K"], "uniqueID": "old", "touched": ["OTHER"]}
    assert from_broker(hub, body, at=clock.now - 30, live=False) is Outcome.DELIVERED
    assert browser.received == []
    assert hub.replay(browser, 20_000) == 0  # it entered the cluster 30 s ago
    assert hub.replay(browser, 40_000) == 1


def replayed(hub: Hub) -> list[str]:
    """The uniqueIDs a browser new on ``hub``, subscribed to K, gets from a replay."""
    browser = RecordingBrowser()
    hub.connect(browser)
    hub.subscribe(browser, ["K"])
    hub.replay(browser, 60_000)
    hub.disconnect(browser)
    return [message["uniqueID"] for message in browser.received]


def test_a_message_a_reload_delivers_goes_after_those_that_came_live_whatever_its_time() -> None:
    """A reload gives what a node missed with Redis' time; one that came live has this node's.

    The two clocks cannot order messages a millisecond apart; the broker's order can.
    """
    clock = FakeClock()
    hub, _ = make_hub(clock, brokered=True)
    from_broker(hub, notification("K", unique_id="came-live"))
    from_broker(hub, notification("K", unique_id="missed"), at=clock.now - 0.001)
    assert replayed(hub) == ["came-live", "missed"]


def test_a_post_delivered_while_redis_was_away_takes_its_place_once_redis_returns_it() -> None:
    """Every node's replay gives Redis' order: this post comes after what Redis placed first."""
    clock = FakeClock()
    hub, forwarded = make_hub(clock, brokered=True)
    browser = RecordingBrowser()
    hub.connect(browser)
    hub.subscribe(browser, ["K"])
    from_broker(hub, notification("K", unique_id="before"))
    hub.set_ordering(False)  # Redis went away: posts are delivered here at once
    clock.advance(1)
    assert post(hub, notification("K", unique_id="mine")) is Outcome.DELIVERED
    clock.advance(1)
    # Back: the reload delivers what was placed meanwhile (by Redis' time, before "mine").
    from_broker(hub, notification("K", unique_id="theirs-0"), at=clock.now - 1.5)
    from_broker(hub, notification("K", unique_id="theirs-1"), at=clock.now - 0.5)
    hub.set_ordering(True, hold_seconds=60)
    assert replayed(hub) == ["before", "theirs-0", "theirs-1", "mine"]
    # Published now, placed after them; it comes back, and another node's post follows.
    stamped = bytes(forwarded[0][1])
    assert hub.receive("default", parse_notification(stamped), stamped) is Outcome.LOOPED
    from_broker(hub, notification("K", unique_id="theirs-2"))
    assert replayed(hub) == ["before", "theirs-0", "theirs-1", "mine", "theirs-2"]
    # Its browsers saw it at once: only the replay gives the cluster's order.
    seen = [message["uniqueID"] for message in browser.received]
    assert seen == ["before", "mine", "theirs-0", "theirs-1", "theirs-2"]


def test_what_a_handoff_forwards_is_each_delivery_once_in_order_not_announcements() -> None:
    hub, forwarded = make_hub()
    routed: list[str] = []
    hub.routed = lambda _instance, message: routed.append(orjson.loads(message.payload)["uniqueID"])
    hub.set_ordering(True, hold_seconds=60)
    assert post(hub, notification("K", unique_id="mine")) is Outcome.HELD
    assert routed == []  # held for Redis' order: not delivered, not forwarded yet
    from_broker(hub, notification("K", unique_id="theirs"))
    stamped = bytes(forwarded[0][1])  # what Redis returns: the post as this node stamped it
    hub.receive("default", parse_notification(stamped), stamped)
    hub.receive("default", parse_notification(stamped), stamped)  # a retried copy
    from_broker(hub, notification("K", unique_id="theirs"))  # another path's copy
    hub.announce("default", {"subscribers": ["K"], "state": 1})
    assert routed == ["theirs", "mine"]


def test_a_held_post_the_broker_never_returns_is_delivered_here_once_its_hold_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    hub, _ = make_hub(clock)
    browser = RecordingBrowser()
    hub.connect(browser)
    hub.subscribe(browser, ["K"])
    hub.set_ordering(True, hold_seconds=5)
    assert post(hub, notification("K", unique_id="dropped")) is Outcome.HELD
    clock.advance(4)
    hub.expire()
    assert browser.received == []  # Redis may still return it
    clock.advance(2)
    with caplog.at_level(logging.WARNING, logger="relay.hub"):
        hub.expire()
    assert [message["uniqueID"] for message in browser.received] == ["dropped"]
    assert "delivered 1 post here without the broker's order" in caplog.text
    hub.expire()
    assert len(browser.received) == 1  # once
