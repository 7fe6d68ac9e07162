"""The hub's per-instance counters in bounded memory: a cap, an overflow label, forgetting."""

from __future__ import annotations

import logging

import pytest

from relay.config import LimitsConfig
from relay.core.dedup import RecentIds
from relay.core.history import History
from relay.core.hub import Hub
from relay.core.instance_counts import MAX_COUNTED_NAME
from relay.core.instances import OVERFLOW_INSTANCE
from tests.core.test_hub import RecordingBrowser, post
from tests.support import FakeClock

HISTORY_SECONDS = 60.0


def make_hub(clock: FakeClock, max_instances: int = 3) -> Hub:
    return Hub(
        fingerprint="SELF",
        history=History(100, HISTORY_SECONDS, clock),
        recent=RecentIds(120, 1000, clock),
        clock=clock,
        limits=LimitsConfig(max_instances=max_instances),
    )


def messages_in(hub: Hub) -> dict[str, int]:
    return {name: reading.messages_in for name, reading in hub.readings().items()}


def test_instances_past_the_cap_are_counted_together_and_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = make_hub(FakeClock())
    for instance in ("default", "a", "b", "c", "d", "c"):
        post(hub, {"subscribers": ["K"]}, instance)
    assert messages_in(hub) == {"default": 1, "a": 1, "b": 1, OVERFLOW_INSTANCE: 3}
    assert hub.overflowed == 3
    # Aphlict's status for an instance counted with others: nothing of its own.
    assert hub.status("c")["messages.in"] == 0
    assert hub.status(OVERFLOW_INSTANCE)["messages.in"] == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "limits.max_instances (3)" in warnings[0].getMessage()


def test_history_bytes_count_the_instances_past_the_cap_too() -> None:
    """relay_history_bytes reads the node's whole history, not the instances counted alone."""
    clock = FakeClock()
    history = History(100, HISTORY_SECONDS, clock)
    hub = Hub(
        fingerprint="SELF",
        history=history,
        recent=RecentIds(120, 1000, clock),
        clock=clock,
        limits=LimitsConfig(max_instances=2),
    )
    names = ("default", "a", "b", "c", "d", "e")
    for instance in names:
        post(hub, {"subscribers": ["K"], "n": instance}, instance)
    assert OVERFLOW_INSTANCE in hub.readings()  # "b" to "e" are counted together
    kept = [m for name in names for m in history.replay(name, {"K"}, HISTORY_SECONDS)]
    assert len(kept) == 6
    assert hub.history_bytes == sum(len(m.frame) for m in kept)


def test_the_default_instance_is_always_counted_on_its_own() -> None:
    hub = make_hub(FakeClock(), max_instances=1)
    post(hub, {"subscribers": ["K"]}, "a")
    post(hub, {"subscribers": ["K"]}, "default")
    assert messages_in(hub) == {"a": 1, "default": 1}


@pytest.mark.parametrize("instance", ["x" * (MAX_COUNTED_NAME + 1), OVERFLOW_INSTANCE])
def test_overlong_names_and_the_overflow_label_itself_count_under_it(instance: str) -> None:
    hub = make_hub(FakeClock(), max_instances=100)
    post(hub, {"subscribers": ["K"]}, instance)
    assert messages_in(hub) == {OVERFLOW_INSTANCE: 1}


def test_routing_ignores_how_an_instance_is_counted() -> None:
    hub = make_hub(FakeClock(), max_instances=1)
    post(hub, {"subscribers": ["K"]}, "default")  # the one instance counted on its own
    far, other = RecordingBrowser("far"), RecordingBrowser("other")
    for browser in (far, other):
        hub.connect(browser)
        hub.subscribe(browser, ["K"])
    post(hub, {"subscribers": ["K"], "n": 1}, "far")
    assert [m["n"] for m in far.received] == [1]
    assert other.received == []
    assert hub.replay(far, 60_000) == 1
    assert hub.status(OVERFLOW_INSTANCE)["clients.active"] == 2


def test_a_browser_leaves_the_counters_it_joined() -> None:
    clock = FakeClock()
    hub = make_hub(clock, max_instances=2)
    for instance in ("default", "a"):  # the cap is reached
        post(hub, {"subscribers": ["K"]}, instance)
    late = RecordingBrowser("late")
    hub.connect(late)
    assert hub.status(OVERFLOW_INSTANCE)["clients.active"] == 1
    clock.advance(HISTORY_SECONDS + 1)
    hub.expire()  # "a" is forgotten: there is room again...
    post(hub, {"subscribers": ["K"]}, "late")
    # ...but not for "late" while a browser of it is counted under the overflow label.
    assert "late" not in hub.readings()
    hub.disconnect(late)
    assert hub.status(OVERFLOW_INSTANCE)["clients.active"] == 0
    post(hub, {"subscribers": ["K"]}, "late")
    assert hub.status("late")["messages.in"] == 1


def test_idle_instances_are_forgotten_once_their_history_expires_and_totals_stay() -> None:
    clock = FakeClock()
    hub = make_hub(clock, max_instances=10)
    watched = RecordingBrowser("watched")
    hub.connect(watched)
    for instance in ("default", "quiet", "watched", "busy"):
        post(hub, {"subscribers": ["K"]}, instance)
    clock.advance(HISTORY_SECONDS - 1)
    post(hub, {"subscribers": ["K"]}, "busy")
    hub.expire()
    assert set(hub.readings()) == {"default", "quiet", "watched", "busy"}
    clock.advance(2)
    hub.expire()
    # "quiet" went, its count kept under the overflow label; "watched" has a
    # browser, "busy" posted within the history's age, and default stays.
    assert messages_in(hub) == {"default": 1, "watched": 1, "busy": 2, OVERFLOW_INSTANCE: 1}
    assert hub.overflowed == 0
    assert sum(messages_in(hub).values()) == 5


def test_a_lowered_cap_applies_to_instances_seen_from_then_on() -> None:
    hub = make_hub(FakeClock(), max_instances=10)
    for instance in ("a", "b", "c"):
        post(hub, {"subscribers": ["K"]}, instance)
    hub.set_limits(LimitsConfig(max_instances=2))
    post(hub, {"subscribers": ["K"]}, "d")
    post(hub, {"subscribers": ["K"]}, "a")
    assert messages_in(hub) == {"a": 2, "b": 1, "c": 1, OVERFLOW_INSTANCE: 1}
