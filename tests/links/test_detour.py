"""What a link that went down held, sent on through the relay peers that are up, in order."""

from __future__ import annotations

import orjson

from relay.config import PeerConfig, PeeringConfig
from relay.links.detour import detour
from relay.links.outbox import Outgoing
from relay.links.peer_state import PeerLinkState, PeerState
from tests.support import FakeClock

OWN = "ownFingerprint00"


def peer(fingerprint: str, *, batching: bool = True, **settings: int) -> PeerLinkState:
    """A link that is up to a node named ``fingerprint``."""
    state = PeerLinkState(
        f"cluster[{fingerprint}]",
        PeerConfig(host=f"{fingerprint}.example", port=22281, protocol="http"),
        PeeringConfig(**settings),  # type: ignore[arg-type]
        OWN,
        clock=FakeClock(),
    )
    state.state, state.fingerprint, state.batching = PeerState.UP, fingerprint, batching
    return state


def held(down: PeerLinkState, *names: str, covered: frozenset[str] = frozenset({OWN})) -> None:
    """Queue ``names`` on ``down`` as the hub hands them on (``covered``), then bring it down."""
    for name in names:
        payload = orjson.dumps({"subscribers": ["A"], "uniqueID": name, "touched": [OWN]})
        down.offer("default", payload, b"{}", covered)
    down.state = PeerState.DOWN


def records(link: PeerLinkState) -> list[tuple[str, list[str], bool]]:
    """What ``link`` would send: each record's message uniqueID, ``covered`` and ``resent``."""
    decoded = [orjson.loads(item.record or b"{}") for item in link.outbox.queued()]
    return [
        (record["message"]["uniqueID"], record["covered"], record.get("resent", False))
        for record in decoded
        if "message" in record
    ]


def test_what_the_link_held_goes_to_every_relay_peer_up_marked_resent_in_order() -> None:
    down, relay, other = peer("cut"), peer("relay"), peer("other")
    relay.offer("default", b"queued before")
    held(down, "m0", "m1", "m2")
    given = detour(down.holding(), down, [relay, down, other])
    assert given == {relay: 3, other: 3}
    # Everyone up is covered, so the relays pass them on to the node cut off only.
    covered = sorted({OWN, "other", "relay"})
    expected = [(name, covered, True) for name in ("m0", "m1", "m2")]
    assert records(relay) == records(other) == expected
    assert bytes(relay.outbox.queued()[0].payload) == b"queued before"  # and goes first
    assert len(down.outbox) == 3  # the link keeps them for when the peer is back


def test_a_peer_that_cannot_pass_it_on_is_not_sent_it() -> None:
    down = peer("cut")
    origin, aphlict, unknown = peer("origin"), peer("aphlict", batching=False), peer("new")
    unknown.state, unknown.fingerprint = PeerState.UNKNOWN, None
    gone = peer("gone")
    gone.state = PeerState.DOWN
    # The message came from "origin", which is in its covered set: it has it, and
    # would not pass a copy of its own message on. An Aphlict node forwards what
    # it got by itself; the others are not known to be up.
    held(down, "m0", covered=frozenset({OWN, "origin"}))
    assert detour(down.holding(), down, [origin, aphlict, unknown, gone]) == {}
    assert [len(link.outbox) for link in (origin, aphlict, unknown, gone)] == [0, 0, 0, 0]


def test_the_aphlict_peers_up_are_named_covered_for_they_had_it() -> None:
    down, relay, aphlict = peer("cut"), peer("relay"), peer("aphlict", batching=False)
    held(down, "m0")
    assert detour(down.holding(), down, [relay, aphlict]) == {relay: 1}
    assert records(relay) == [("m0", sorted({OWN, "aphlict", "relay"}), True)]


def test_a_message_queued_without_its_covered_set_stays_with_the_link() -> None:
    down, relay = peer("cut"), peer("relay")
    down.offer("default", b'{"subscribers":[]}')
    down.state = PeerState.DOWN
    assert detour(down.holding(), down, [relay]) == {}


def test_a_relay_with_little_room_gets_the_oldest_that_fit_and_drops_nothing_it_had() -> None:
    down, relay = peer("cut"), peer("relay", queue_size=4)
    relay.offer("default", b"mine")
    held(down, "m0", "m1", "m2", "m3", "m4")
    assert detour(down.holding(), down, [relay]) == {relay: 3}
    queued = relay.outbox.queued()
    assert bytes(queued[0].payload) == b"mine"
    assert [orjson.loads(item.payload)["uniqueID"] for item in queued[1:]] == ["m0", "m1", "m2"]
    assert relay.outbox.dropped == 0


def test_nothing_held_nothing_sent() -> None:
    down, relay = peer("cut"), peer("relay")
    held(down)
    items: list[Outgoing] = down.holding()
    assert (items, detour(items, down, [relay]), len(relay.outbox)) == ([], {}, 0)
