"""The mesh's alert sender: the oldest node sends, a successor what its predecessor could not."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relay.core.alerts import AlertEvent, Problem
from relay.links.speaker import Member, MeshSpeaker, members_of, sender
from tests.support import FakeClock

SETTLE = 2.0


def event(name: str, state: str = "firing", kind: str = "read-only") -> AlertEvent:
    return AlertEvent(Problem(kind, name, name), state, 0.0)


def member(place: str, started_at: float, *, me: bool = False, age: float = 0.0) -> Member:
    return Member(place, started_at, me, age)


def test_the_oldest_node_sends_then_the_smallest_place() -> None:
    young = member("a:1", 20.0)
    old = member("z:1", 10.0)
    twin = member("b:1", 10.0)
    assert sender([young, old]) == old
    assert sender([young, old, twin]) == twin
    assert sender([]) is None


def test_members_are_read_from_the_rosters_rows() -> None:
    row = {"place": "h:1", "started_at": 5.5, "self": True, "last_seen_seconds": 0.3}
    assert members_of([row]) == [Member("h:1", 5.5, True, 0.3)]


def test_the_oldest_holds_back_while_it_settles_then_sends_it_all() -> None:
    clock = FakeClock()
    speaker = MeshSpeaker(clock, SETTLE)
    me = member("a:1", 1.0, me=True)
    other = member("b:1", 2.0)
    assert speaker.look([me], [event("1")]) == []
    clock.advance(1)
    assert speaker.look([me, other], [event("2")]) == []
    clock.advance(1)
    assert speaker.look([me, other], [event("3")]) == [event("1"), event("2"), event("3")]
    assert speaker.speaking
    clock.advance(1)
    assert speaker.look([me, other], [event("4")]) == [event("4")]


def test_before_its_own_record_is_heard_a_node_holds_back() -> None:
    clock = FakeClock()
    speaker = MeshSpeaker(clock, SETTLE)
    assert speaker.look([], [event("early")]) == []
    clock.advance(SETTLE)
    me = member("a:1", 1.0, me=True)
    assert speaker.look([me], [event("on time")]) == [event("early"), event("on time")]


def test_a_younger_node_sends_only_its_own_links() -> None:
    clock = FakeClock()
    speaker = MeshSpeaker(clock, SETTLE)
    me = member("a:1", 5.0, me=True)
    elder = member("z:1", 1.0)
    link = event("z:1", kind="peer-down")
    for _ in range(5):
        assert speaker.look([me, elder], [event("x")]) == []
        clock.advance(1)
    assert speaker.look([me, elder], [event("y"), link]) == [link]
    assert not speaker.speaking


def test_a_successor_sends_what_came_after_its_predecessor_was_last_heard() -> None:
    clock = FakeClock()
    speaker = MeshSpeaker(clock, SETTLE)
    me = member("b:1", 2.0, me=True)
    speaker.look([me, member("a:1", 1.0)], [])
    clock.advance(10)
    speaker.look([me, member("a:1", 1.0)], [event("db", "firing")])  # the elder sent it
    clock.advance(1)
    # The elder was last heard 0.5 s ago, then died: it sent nothing after.
    speaker.look([me, member("a:1", 1.0, age=0.5)], [])
    clock.advance(1)
    speaker.look([me, member("a:1", 1.0, age=1.5)], [event("db", "resolved"), event("ro")])
    clock.advance(1)
    left = event("a:1", kind="node-left")
    sent = speaker.look([me], [left])
    assert sent == [event("db", "resolved"), event("ro"), left]
    assert speaker.speaking


def test_a_sender_that_died_before_it_took_over_covers_nothing() -> None:
    clock = FakeClock()
    speaker = MeshSpeaker(clock, SETTLE)
    me = member("c:1", 3.0, me=True)
    speaker.look([me, member("a:1", 1.0), member("b:1", 2.0)], [])
    clock.advance(10)
    # The eldest was last heard 4 s ago; the next one 3 s ago: both died.
    stale = [me, member("a:1", 1.0, age=4.0), member("b:1", 2.0, age=3.0)]
    speaker.look(stale, [event("1")])
    clock.advance(1)
    # The eldest is gone: the next one sends, in this node's view, but is never heard again.
    speaker.look([me, member("b:1", 2.0, age=4.0)], [event("2")])
    clock.advance(1)
    sent = speaker.look([me], [event("3")])
    # What came after the eldest was last heard is this node's to send.
    assert sent == [event("1"), event("2"), event("3")]


def test_an_elder_coming_back_takes_nothing_over_a_younger_one_returning() -> None:
    clock = FakeClock()
    speaker = MeshSpeaker(clock, SETTLE)
    me = member("b:1", 2.0, me=True)
    speaker.look([me], [])
    clock.advance(10)
    assert speaker.look([me], [event("x")]) == [event("x")]
    clock.advance(1)
    # A node restarted is the youngest: this one goes on sending.
    assert speaker.look([me, member("a:1", 50.0)], [event("y")]) == [event("y")]
    clock.advance(1)
    # An elder (a partition healing): it sends from now on.
    assert speaker.look([me, member("c:1", 1.0)], [event("z")]) == []


@given(
    nodes=st.integers(min_value=2, max_value=5),
    deaths=st.lists(st.one_of(st.none(), st.integers(0, 30)), min_size=5, max_size=5),
    survivor=st.integers(0, 4),
)
def test_every_event_seen_after_the_settle_is_sent_once_whoever_dies(
    nodes: int, deaths: list[int | None], survivor: int
) -> None:
    """Nodes announce and look once a tick; each tick every live node sees one event."""
    gone_after = 4
    settle = 3
    death = {i: deaths[i] for i in range(nodes)}
    death[survivor % nodes] = None
    last_heard = dict.fromkeys(range(nodes), 0)
    clock = FakeClock(0.0)
    speakers = [MeshSpeaker(clock, settle) for _ in range(nodes)]
    sent: list[str] = []
    ticks = 30 + gone_after + settle + 2
    for tick in range(ticks):
        clock.now = float(tick)
        alive = [i for i in range(nodes) if death[i] is None or tick < (death[i] or 0)]
        for i in alive:
            last_heard[i] = tick
        present = [j for j in range(nodes) if tick - last_heard[j] <= gone_after]
        for i in alive:
            members = [
                Member(f"n{j}", float(j), i == j, float(tick - last_heard[j])) for j in present
            ]
            sent += [e.problem.subject or "" for e in speakers[i].look(members, [event(str(tick))])]
    for tick in range(ticks):
        assert sent.count(str(tick)) == (1 if tick >= settle else sent.count(str(tick)))
        assert sent.count(str(tick)) <= 1
