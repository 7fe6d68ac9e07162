"""The routing core against a reference model, for any sequence of operations (hypothesis).

Hypothesis drives the real ``Hub`` (built as tests/core/test_hub.py builds it: real
``History`` and ``RecentIds`` on a fake clock) and a plain model side by side
through connects, subscribes, unsubscribes, disconnects, posts (new ones, and
copies of earlier ones arriving by another path, some already touched by this
node), replays, clock moves and housekeeping, across two instances. After
every step it checks that each browser received exactly what the model says,
in order, that the peers were handed the same messages, that each instance
retains what the model retains, and that a fresh browser would replay what
the model replays for every age.

Small alphabets of keys, instances, ``uniqueID`` values and bodies make
subscriptions overlap and duplicates happen. Clock steps are whole or half
seconds, exact in floating point, and reach the history and dedup windows
exactly, just short of them and just past them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from relay.core.dedup import RecentIds
from relay.core.encoded import EncodedMessage
from relay.core.history import History
from relay.core.hub import Hub, Outcome
from relay.core.notification import parse_notification
from tests.support import FakeClock

SELF = "SELF"
START = 1000.0
#: Smaller than tests/core/test_hub.py's 100, so that runs reach the count bound.
HISTORY_MESSAGES = 4
HISTORY_AGE = 60.0
DEDUP_WINDOW = 120.0
#: Never reached: a run posts far fewer messages, so dedup is bounded by time alone.
DEDUP_CAPACITY = 1000

INSTANCES = ("default", "acme")
KEYS = ("A", "B", "C")
ABSENT = object()
#: ``uniqueID`` values: missing, empty and not a string all mean "identify by content".
UNIQUE_IDS: tuple[object, ...] = (ABSENT, "", "u1", "u2", 7)
#: ``touched`` lists; the last one has already passed through this node (a loop).
TOUCHED: tuple[object, ...] = (ABSENT, ABSENT, [], ["N1"], ["N1", "N2"], ["N2", SELF])
#: Another field, so that content digests sometimes differ and sometimes collide.
EXTRA: tuple[object, ...] = (ABSENT, 1, 2)
#: Clock steps in seconds: whole and half seconds only, so that the model's and the hub's
#: arithmetic agree exactly. Ticks keep messages retained for the next replay; leaps reach
#: the history and dedup windows exactly, or just short of or past them.
TICKS = (0.0, 0.5, 1.0)
LEAPS = tuple(window + d for window in (HISTORY_AGE, DEDUP_WINDOW) for d in (-0.5, 0.0, 0.5))
#: When a copy of an earlier post arrives, in seconds after it: at once, or about when
#: the dedup window ends.
COPY_DELAYS = (0.0, DEDUP_WINDOW - 0.5, DEDUP_WINDOW, DEDUP_WINDOW + 0.5)
#: Replay ages in milliseconds, also exact when divided by 1000.
AGES_MS = (0, 500, 1000, 30_000, 59_500, 60_000, 61_000)

#: Subscriptions of the fresh browsers that check replay after every step.
PROBE_KEYS = (["A"], list(KEYS))

key_lists = st.lists(st.sampled_from(KEYS), max_size=3)

Message = dict[str, Any]


class RecordingBrowser:
    """The hub's side of a browser: it keeps every message it is given, decoded."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.received: list[Message] = []

    def deliver(self, message: EncodedMessage) -> None:
        self.received.append(orjson.loads(message.payload))


@dataclass
class ModelBrowser:
    """A browser as the model sees it: its instance, its keys, what it should have received."""

    instance: str
    keys: set[str] = field(default_factory=set)
    connected: bool = True
    expected: list[Message] = field(default_factory=list)


@dataclass
class Stored:
    """A delivered message, when it arrived and whom it was for."""

    at: float
    subscribers: set[str]
    message: Message


class Model:
    """What routing means, spelled out with lists and dicts."""

    def __init__(self) -> None:
        self.now = START
        self.browsers: list[ModelBrowser] = []
        #: Every message ever stored, per instance, oldest first (bounds applied on reading).
        self.stored: dict[str, list[Stored]] = {}
        #: When each (instance, identity) was first delivered.
        self.first_seen: dict[tuple[str, tuple[str, str]], float] = {}
        self.forwarded: list[tuple[str, Message, frozenset[str]]] = []

    def connect(self, instance: str) -> int:
        self.browsers.append(ModelBrowser(instance))
        return len(self.browsers) - 1

    def post(self, instance: str, body: Message) -> Outcome:
        """Route a posted body: drop loops and repeats, else store, deliver and forward it."""
        touched = body.get("touched", [])
        if SELF in touched:
            return Outcome.LOOPED
        unique_id = body.get("uniqueID")
        if isinstance(unique_id, str) and unique_id:
            identity = ("id", unique_id)
        else:
            rest = {name: value for name, value in body.items() if name != "touched"}
            identity = ("body", json.dumps(rest, sort_keys=True))
        first = self.first_seen.get((instance, identity))
        if first is not None and self.now - first <= DEDUP_WINDOW:
            return Outcome.DUPLICATE
        self.first_seen[(instance, identity)] = self.now
        message = {**body, "touched": [*touched, SELF]}
        subscribers = set(body["subscribers"])
        self.stored.setdefault(instance, []).append(Stored(self.now, subscribers, message))
        for browser in self.browsers:
            if browser.connected and browser.instance == instance and browser.keys & subscribers:
                browser.expected.append(message)
        self.forwarded.append((instance, message, frozenset([*touched, SELF])))
        return Outcome.DELIVERED

    def retained(self, instance: str) -> list[Stored]:
        """The last ``HISTORY_MESSAGES`` stored, less those older than ``HISTORY_AGE``."""
        newest = self.stored.get(instance, [])[-HISTORY_MESSAGES:]
        return [entry for entry in newest if self.now - entry.at <= HISTORY_AGE]

    def replay(self, index: int, age_ms: int) -> int:
        browser = self.browsers[index]
        found = self.replayed(browser.instance, browser.keys, age_ms)
        browser.expected.extend(found)
        return len(found)

    def replayed(self, instance: str, keys: set[str], age_ms: int) -> list[Message]:
        """Retained messages of the last ``age_ms`` for any of ``keys``, oldest first."""
        return [
            entry.message
            for entry in self.retained(instance)
            if self.now - entry.at <= age_ms / 1000 and entry.subscribers & keys
        ]


@st.composite
def bodies(draw: st.DrawFn) -> Message:
    """Notification bodies from small alphabets, so that identities collide."""
    body: Message = {"subscribers": draw(key_lists)}
    for name, values in (("uniqueID", UNIQUE_IDS), ("touched", TOUCHED), ("n", EXTRA)):
        value = draw(st.sampled_from(values))
        if value is not ABSENT:
            body[name] = value
    return body


class RoutingMachine(RuleBasedStateMachine):
    """The real hub and the model, fed the same operations."""

    browsers = Bundle("browsers")
    posted = Bundle("posted")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(START)
        self.forwarded: list[tuple[str, bytes, frozenset[str]]] = []
        self.hub = Hub(
            fingerprint=SELF,
            history=History(HISTORY_MESSAGES, HISTORY_AGE, self.clock),
            recent=RecentIds(DEDUP_WINDOW, DEDUP_CAPACITY, self.clock),
            clock=self.clock,
            forward=lambda *args: self.forwarded.append(args),
        )
        self.real: list[RecordingBrowser] = []
        self.model = Model()

    @rule(target=browsers, instance=st.sampled_from(INSTANCES), keys=key_lists)
    def connect(self, instance: str, keys: list[str]) -> int:
        """Connect a browser and subscribe it at once, as Phorge's page does."""
        browser = RecordingBrowser(instance)
        self.real.append(browser)
        self.hub.connect(browser)
        index = self.model.connect(instance)
        self.subscribe(index, keys)
        return index

    @rule(index=browsers, keys=key_lists)
    def subscribe(self, index: int, keys: list[str]) -> None:
        self.hub.subscribe(self.real[index], keys)
        self.model.browsers[index].keys.update(keys)

    @rule(index=browsers, keys=key_lists)
    def unsubscribe(self, index: int, keys: list[str]) -> None:
        self.hub.unsubscribe(self.real[index], keys)
        self.model.browsers[index].keys.difference_update(keys)

    @rule(index=consumes(browsers))
    def disconnect(self, index: int) -> None:
        self.hub.disconnect(self.real[index])
        self.model.browsers[index].connected = False

    @rule(target=posted, instance=st.sampled_from(INSTANCES), body=bodies())
    def post(self, instance: str, body: Message) -> tuple[float, Message]:
        self.publish(instance, body)
        return self.model.now, body

    @rule(
        earlier=posted,
        delay=st.sampled_from(COPY_DELAYS),
        instance=st.sampled_from(INSTANCES),
        touched=st.sampled_from(TOUCHED),
    )
    def post_copy(
        self, earlier: tuple[float, Message], delay: float, instance: str, touched: object
    ) -> None:
        """Post a copy of an earlier post, as another path or another instance brings it.

        It arrives ``delay`` seconds after the original, or now if that is past.
        """
        posted_at, original = earlier
        wait = posted_at + delay - self.model.now
        if wait > 0:
            self.advance(wait)
        body = {name: value for name, value in original.items() if name != "touched"}
        if touched is not ABSENT:
            body["touched"] = touched
        self.publish(instance, body)

    def publish(self, instance: str, body: Message) -> None:
        outcome = self.hub.publish(instance, parse_notification(orjson.dumps(body)))
        assert outcome is self.model.post(instance, body)

    @rule(index=browsers, age_ms=st.sampled_from(AGES_MS))
    def replay(self, index: int, age_ms: int) -> None:
        assert self.hub.replay(self.real[index], age_ms) == self.model.replay(index, age_ms)

    @rule(seconds=st.sampled_from(TICKS))
    def tick(self, seconds: float) -> None:
        self.advance(seconds)

    @rule(seconds=st.sampled_from(LEAPS))
    def leap(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.model.now += seconds

    @rule()
    def housekeeping(self) -> None:
        self.hub.expire()

    @invariant()
    def browsers_received_what_the_model_expects(self) -> None:
        for real, model in zip(self.real, self.model.browsers, strict=True):
            assert real.received == model.expected

    @invariant()
    def peers_were_handed_the_same_messages(self) -> None:
        forwarded = [(i, orjson.loads(payload), touched) for i, payload, touched in self.forwarded]
        assert forwarded == self.model.forwarded

    @invariant()
    def each_instance_retains_what_the_model_retains(self) -> None:
        for instance in INSTANCES:
            expected = len(self.model.retained(instance))
            assert self.hub.status(instance)["history.size"] == expected

    @invariant()
    def a_new_browser_would_replay_what_the_model_replays(self) -> None:
        """Replay every age to a fresh browser on each instance, then let it go.

        Browsers made by the rules replay only now and then; this checks what
        any replay would return at every step.
        """
        for instance in INSTANCES:
            for keys in PROBE_KEYS:
                probe = RecordingBrowser(instance)
                self.hub.connect(probe)
                self.hub.subscribe(probe, keys)
                for age_ms in AGES_MS:
                    self.hub.replay(probe, age_ms)
                    expected = self.model.replayed(instance, set(keys), age_ms)
                    assert probe.received == expected
                    probe.received.clear()
                self.hub.disconnect(probe)


def test_hub_routes_like_the_reference_model() -> None:
    run_state_machine_as_test(
        RoutingMachine,
        settings=settings(
            max_examples=120,
            stateful_step_count=40,
            deadline=None,
            derandomize=True,
            database=None,
        ),
    )
