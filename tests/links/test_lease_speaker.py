"""Broker mode's alert sender: the lease holder speaks, and an outage of Redis is one node's."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from relay.core.alerts import AlertEvent, AlertTracker, Problem
from relay.links.lease_speaker import LeaseSpeaker
from tests.support import FakeClock

OUTAGE = Problem("broker-lost", None, "Redis redis://r:6379/0 is down")
READ_ONLY = Problem("read-only", None, "Phorge is read-only")


def told(events: list[AlertEvent]) -> list[tuple[str, str]]:
    return [(e.problem.kind, e.state) for e in events]


@dataclass
class Node:
    """One node's alerts as ``relay.observe.alerts`` wires them: a tracker, then the speaker."""

    clock: FakeClock
    tracker: AlertTracker = field(init=False)
    speaker: LeaseSpeaker = field(default_factory=LeaseSpeaker)
    sent: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tracker = AlertTracker(self.clock, {})

    def look(self, *, speaks: bool, redis_down: bool, wrong: tuple[Problem, ...] = ()) -> None:
        now_wrong = [*wrong, OUTAGE] if redis_down else list(wrong)
        self.sent += told(self.speaker.look(speaks, self.tracker.update(now_wrong)))


def test_other_kinds_are_sent_only_while_speaking() -> None:
    speaker = LeaseSpeaker()
    begun = AlertEvent(READ_ONLY, "firing", 0.0)
    ended = AlertEvent(READ_ONLY, "resolved", 0.0)
    assert speaker.look(False, [begun]) == []
    # A node taking over sends the end of an episode its predecessor began.
    assert speaker.look(True, [ended]) == [ended]


def test_the_holder_tells_an_outage_and_its_end() -> None:
    node = Node(FakeClock())
    node.look(speaks=True, redis_down=False)
    node.look(speaks=True, redis_down=True)
    node.look(speaks=True, redis_down=False)
    assert node.sent == [("broker-lost", "firing"), ("broker-lost", "resolved")]


def test_the_old_holder_ends_its_outage_when_another_holds_the_lease() -> None:
    """An outage longer than the lease: the lease is another's by its end; the end is sent once."""
    clock = FakeClock()
    old, new = Node(clock), Node(clock)
    old.look(speaks=True, redis_down=False)
    new.look(speaks=False, redis_down=False)
    clock.advance(1)
    old.look(speaks=True, redis_down=True)
    new.look(speaks=False, redis_down=True)
    clock.advance(10)  # the old holder's lease ran out: it lost it to the outage, and speaks on
    old.look(speaks=True, redis_down=True)
    new.look(speaks=False, redis_down=True)
    clock.advance(1)  # Redis back: the new node took the lease; the old one heard it refused
    new.look(speaks=True, redis_down=False)
    old.look(speaks=False, redis_down=False)
    assert old.sent == [("broker-lost", "firing"), ("broker-lost", "resolved")]
    assert new.sent == []


def test_the_old_holder_ends_it_whichever_node_sees_redis_back_first() -> None:
    """Both speak for a moment (one lost the lease to the outage, one took it): one end still."""
    clock = FakeClock()
    old, new = Node(clock), Node(clock)
    old.look(speaks=True, redis_down=True)
    new.look(speaks=False, redis_down=True)
    clock.advance(5)
    new.look(speaks=True, redis_down=False)
    old.look(speaks=True, redis_down=False)  # not yet told the lease is another's
    assert old.sent == [("broker-lost", "firing"), ("broker-lost", "resolved")]
    assert new.sent == []


def test_the_old_holder_taking_the_lease_again_ends_its_outage() -> None:
    clock = FakeClock()
    old, other = Node(clock), Node(clock)
    for speaks in (True, True, True):
        old.look(speaks=speaks, redis_down=True)
        other.look(speaks=False, redis_down=True)
        clock.advance(1)
    old.look(speaks=True, redis_down=False)
    other.look(speaks=False, redis_down=False)
    assert old.sent == [("broker-lost", "firing"), ("broker-lost", "resolved")]
    assert other.sent == []


def test_no_end_without_its_start_when_the_renewal_is_refused() -> None:
    """Redis back empty at once: the holder lost the lease before it saw the outage."""
    clock = FakeClock()
    old, new = Node(clock), Node(clock)
    old.look(speaks=True, redis_down=False)
    new.look(speaks=False, redis_down=True)  # seen, silently, by a node not speaking
    clock.advance(1)
    old.look(speaks=False, redis_down=True)  # its renewal was refused in between
    new.look(speaks=True, redis_down=True)  # it took the lease
    clock.advance(1)
    old.look(speaks=False, redis_down=False)
    new.look(speaks=True, redis_down=False)
    assert old.sent == []
    assert new.sent == []


def test_an_outage_just_after_a_clean_handover_is_told_by_the_new_holder() -> None:
    """The old holder stopped (the lease released): no one else can tell it."""
    clock = FakeClock()
    old, new = Node(clock), Node(clock)
    old.look(speaks=True, redis_down=False)
    new.look(speaks=False, redis_down=False)
    clock.advance(1)  # the old holder stopped; the new one took the lease
    new.look(speaks=True, redis_down=True)  # its first look since it took the lease
    clock.advance(1)
    new.look(speaks=True, redis_down=False)
    assert new.sent == [("broker-lost", "firing"), ("broker-lost", "resolved")]


def test_an_outage_while_two_nodes_speak_is_told_by_both() -> None:
    """The documented limit: the old holder speaks on until Redis answers it again."""
    clock = FakeClock()
    old, new = Node(clock), Node(clock)
    old.look(speaks=True, redis_down=False)
    new.look(speaks=False, redis_down=False)
    clock.advance(1)
    old.look(speaks=True, redis_down=True)
    new.look(speaks=True, redis_down=True)
    clock.advance(1)
    old.look(speaks=False, redis_down=False)
    new.look(speaks=True, redis_down=False)
    assert old.sent == [("broker-lost", "firing"), ("broker-lost", "resolved")]
    assert new.sent == [("broker-lost", "firing"), ("broker-lost", "resolved")]


def test_a_node_speaking_at_its_first_look_tells_an_outage() -> None:
    """Without the lease (broker mode without cluster_status) each node speaks from the start."""
    node = Node(FakeClock())
    node.look(speaks=True, redis_down=True)
    node.look(speaks=True, redis_down=False)
    assert node.sent == [("broker-lost", "firing"), ("broker-lost", "resolved")]


def test_several_short_outages_are_each_one_start_and_one_end() -> None:
    clock = FakeClock()
    holder, other = Node(clock), Node(clock)
    for _ in range(3):
        for down in (True, False):
            holder.look(speaks=True, redis_down=down)
            other.look(speaks=False, redis_down=down)
            clock.advance(0.5)
    assert holder.sent == [("broker-lost", "firing"), ("broker-lost", "resolved")] * 3
    assert other.sent == []


def test_other_episodes_follow_the_lease_while_an_outage_stays_with_its_teller() -> None:
    clock = FakeClock()
    old, new = Node(clock), Node(clock)
    old.look(speaks=True, redis_down=True, wrong=(READ_ONLY,))
    new.look(speaks=False, redis_down=True, wrong=(READ_ONLY,))
    clock.advance(5)
    old.look(speaks=False, redis_down=False)
    new.look(speaks=True, redis_down=False)
    begun, ended = ("broker-lost", "firing"), ("broker-lost", "resolved")
    assert old.sent == [("read-only", "firing"), begun, ended]
    assert new.sent == [("read-only", "resolved")]


@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=40))
def test_a_node_never_tells_an_end_without_its_start(looks: list[tuple[bool, bool]]) -> None:
    """Whatever the lease and Redis do between looks: a start, its end, a start..."""
    clock = FakeClock()
    node = Node(clock)
    for speaks, down in looks:
        node.look(speaks=speaks, redis_down=down)
        clock.advance(1)
    states = [state for _, state in node.sent]
    assert states == ["firing", "resolved"] * (len(states) // 2) + ["firing"] * (len(states) % 2)
