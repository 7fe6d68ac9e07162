"""The subscription index, without a server."""

from __future__ import annotations

from relay.core.subscriptions import SubscriptionIndex


def test_recipients_are_exactly_the_subscribers_of_any_key() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.subscribe("a", "default", ["K1"])
    index.subscribe("b", "default", ["K1", "K2"])
    index.subscribe("c", "default", ["K3"])
    assert sorted(index.recipients("default", ["K1", "K2"])) == ["a", "b"]
    assert index.recipients("default", ["K9"]) == []


def test_instances_do_not_mix() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.subscribe("a", "acme", ["K"])
    index.subscribe("b", "other", ["K"])
    assert index.recipients("acme", ["K"]) == ["a"]
    assert index.recipients("nobody", ["K"]) == []


def test_subscribe_reports_only_new_keys() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    assert index.subscribe("a", "default", ["K1", "K2"]) == (["K1", "K2"], 0)
    assert index.subscribe("a", "default", ["K2", "K3", "K3"]) == (["K3"], 0)
    assert index.count("a") == 3


def test_subscriptions_stop_at_the_limit_and_known_keys_cost_nothing() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    assert index.subscribe("a", "default", ["K1", "K2", "K3"], limit=2) == (["K1", "K2"], 1)
    assert index.subscribe("a", "default", ["K1", "K4", "K5"], limit=2) == ([], 2)
    assert index.keys_of("a") == {"K1", "K2"}
    assert index.recipients("default", ["K3", "K4", "K5"]) == []


def test_unsubscribe_and_forget_leave_nothing_behind() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.subscribe("a", "default", ["K1", "K2"])
    index.subscribe("b", "default", ["K1"])
    index.unsubscribe("a", ["K1", "unknown"])
    assert index.recipients("default", ["K1"]) == ["b"]
    assert index.keys_of("a") == {"K2"}
    index.forget("a")
    index.forget("b")
    index.forget("never-seen")
    index.unsubscribe("never-seen", ["K"])
    assert index.recipients("default", ["K1", "K2"]) == []
    assert index._by_instance == {}
    assert index._keys_of == {}


def test_a_key_goes_from_one_listener_to_several_and_back() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.subscribe("a", "default", ["K"])
    assert index.recipients("default", ["K"]) == ["a"]
    index.subscribe("b", "default", ["K"])
    index.subscribe("c", "default", ["K"])
    assert sorted(index.recipients("default", ["K"])) == ["a", "b", "c"]
    index.forget("b")
    index.unsubscribe("a", ["K"])
    assert index.recipients("default", ["K"]) == ["c"]
    index.subscribe("a", "default", ["K", "L"])
    assert sorted(index.recipients("default", ["L", "K"])) == ["a", "c"]
    assert index.total == 3
    index.forget("c")
    index.forget("a")
    assert index.total == 0
    assert index._by_instance == {}


def test_a_connections_keys_follow_its_commands() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.subscribe("a", "acme", ["K1", "K2"])
    index.subscribe("a", "acme", ["K3"])
    index.unsubscribe("a", ["K2"])
    assert index.keys_of("a") == {"K1", "K3"}
    assert index.count("a") == 2
    assert index.recipients("acme", ["K1"]) == ["a"]
    index.unsubscribe("a", ["K1", "K3"])
    assert index.count("a") == 0
    assert index._keys_of == {}
