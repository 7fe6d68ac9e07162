"""The presence roster on a fake clock: ageing, who joined and who left (no Redis)."""

from __future__ import annotations

import dataclasses

from relay.links.presence import Sighting
from relay.links.roster import Roster
from tests.links.test_presence import IDENTITY, other, record
from tests.support import FakeClock


def test_the_roster_ages_its_reading_until_members_turn_stale_then_gone() -> None:
    clock = FakeClock()
    roster = Roster(IDENTITY, "relay", clock)
    sibling = other("FPbbbbbbbbbbbbbb", "web1:100", worker=1)
    staging = other("FPcccccccccccccc", "stage:7")
    roster.update(
        [
            Sighting(record(), 0.0),
            Sighting(record(sibling, browsers=2, rate_out=0.5), 1.0),
            Sighting(record(staging, browsers=5), 4.0),
        ]
    )
    assert roster.others() == ["stage:7"]
    states = {m["fingerprint"]: m["state"] for m in roster.members()}
    assert states == {
        "FPaaaaaaaaaaaaaa": "fresh",
        "FPbbbbbbbbbbbbbb": "fresh",
        "FPcccccccccccccc": "fresh",
    }
    status = roster.status()
    assert status["totals"] == {
        "nodes": 2,
        "processes": 3,
        "stale": 0,
        "browsers": 10,
        "rate_in": 2.0,
        "rate_out": 3.5,
    }
    assert [m["self"] for m in status["members"]] == [False, True, False]
    assert (status["stale_after_seconds"], status["gone_after_seconds"]) == (5.0, 8.0)
    clock.advance(1.5)  # staging: 5.5 s old, past 2.5 intervals
    assert {m["fingerprint"]: m["state"] for m in roster.members()}["FPcccccccccccccc"] == "stale"
    assert roster.status()["totals"]["stale"] == 1
    clock.advance(2.6)  # staging: 8.1 s, gone; the sibling 5.1 s, stale
    states = {m["fingerprint"]: m["state"] for m in roster.members()}
    assert states == {"FPaaaaaaaaaaaaaa": "fresh", "FPbbbbbbbbbbbbbb": "stale"}
    roster.failed("timed out")
    assert roster.status()["last_error"] == "timed out"


def test_the_roster_tells_who_joined_and_who_left_by_place_not_while_redis_is_away() -> None:
    clock = FakeClock()
    roster = Roster(IDENTITY, "relay", clock)
    mine = dataclasses.replace(record(), address="web1:22281")
    web2 = dataclasses.replace(record(other("FPdddddddddddddd", "web2:7")), address="web2:22281")
    status = roster.status()
    assert (status["joined"], status["left"]) == ([], [])  # nothing read yet
    roster.update([Sighting(mine, 0.0), Sighting(web2, 0.0)])
    assert roster.status()["members"][1]["place"] == "web2:22281"
    assert (roster.status()["joined"], roster.status()["left"]) == ([], [])
    clock.advance(8.1)
    roster.failed("timed out")  # every reading ages: nobody is known to have left
    assert roster.status()["left"] == []
    roster.update([Sighting(mine, 0.0)])
    # Back from the outage: web2 may not have announced again yet.
    assert roster.status()["left"] == []
    clock.advance(8.1)  # unheard for the gone bound since: it left
    roster.update([Sighting(mine, 0.0)])
    assert roster.status()["left"] == ["web2:22281"]
    # Restarted: another pid and fingerprint, the same place.
    again = dataclasses.replace(web2, identity=other("FPeeeeeeeeeeeeee", "web2:9"))
    web3 = dataclasses.replace(record(other("FPffffffffffffff", "web3:4")), address="")
    roster.update([Sighting(mine, 0.0), Sighting(again, 0.0), Sighting(web3, 0.0)])
    assert (roster.status()["joined"], roster.status()["left"]) == (["web3:4"], [])


def test_the_roster_takes_announcements_one_by_one_aged_from_their_arrival() -> None:
    clock = FakeClock()
    roster = Roster(IDENTITY, None, clock, settle=1.0)
    roster.heard(record())
    clock.advance(0.5)
    roster.heard(record(other("FPdddddddddddddd", "web2:7")))
    assert [m["state"] for m in roster.members()] == ["fresh", "fresh"]
    clock.advance(5.0)  # web2 is 5.0 s old: fresh still; at 5.1, stale
    roster.heard(record())
    clock.advance(0.1)
    assert [m["state"] for m in roster.members()] == ["fresh", "stale"]
    clock.advance(3.0)
    roster.heard(record())  # web2 is gone, and forgotten
    assert [m["node"] for m in roster.members()] == ["web1:100"]
    assert roster.status()["prefix"] is None


MINE = dataclasses.replace(record(), address="web1:22281")
WEB2 = dataclasses.replace(record(other("FPdddddddddddddd", "web2:7")), address="web2:22281")
WEB3 = dataclasses.replace(record(other("FPffffffffffffff", "web3:4")), address="web3:22281")
#: IDENTITY's interval is 2 s: stale after 5 s, gone after 8 s.
GONE = 8.0


def three_nodes(clock: FakeClock) -> Roster:
    """A roster that has read web1 (itself), web2 and web3, all just announced."""
    roster = Roster(IDENTITY, "relay", clock)
    roster.update([Sighting(MINE, 0.0), Sighting(WEB2, 0.5), Sighting(WEB3, 1.0)])
    assert roster.status()["members"][2]["place"] == "web3:22281"
    return roster


def places(roster: Roster) -> dict[str, str]:
    return {m["place"]: m["state"] for m in roster.status()["members"]}


def test_a_partial_reading_after_failed_rounds_holds_the_nodes_it_misses() -> None:
    clock = FakeClock()
    roster = three_nodes(clock)
    for _ in range(2):
        clock.advance(2.0)
        roster.failed("ConnectionError")
    clock.advance(2.0)
    roster.update([Sighting(MINE, 0.0)])  # Redis is back, only this node announced yet
    assert roster.status()["left"] == []
    assert roster.others() == ["web2:7", "web3:4"]  # nobody logged as leaving
    assert places(roster)["web2:22281"] == "stale"  # 6.5 s unheard: missed rounds
    clock.advance(1.0)
    roster.update([Sighting(MINE, 0.0), Sighting(WEB2, 0.2), Sighting(WEB3, 0.7)])
    assert set(places(roster).values()) == {"fresh"}
    clock.advance(GONE + 1.0)
    roster.update([Sighting(MINE, 0.0), Sighting(WEB2, 0.2), Sighting(WEB3, 0.7)])
    assert roster.status()["left"] == []


def test_a_node_that_died_during_a_long_outage_leaves_within_the_gone_bound_after_it() -> None:
    clock = FakeClock()
    roster = three_nodes(clock)
    clock.advance(30.0)  # Redis away far longer than the gone bound
    roster.failed("timed out")
    assert roster.status()["left"] == []
    recovered = clock.now
    roster.update([Sighting(MINE, 0.0)])
    assert roster.status()["left"] == []
    roster.update([Sighting(MINE, 0.0), Sighting(WEB2, 0.3)])  # web3 died meanwhile
    # Heard last 1 s before the outage: 7 s more of listening and it is gone.
    clock.advance(GONE - 1.0)
    roster.update([Sighting(MINE, 0.0), Sighting(WEB2, 0.3)])
    assert (roster.status()["left"], places(roster)["web3:22281"]) == ([], "stale")
    clock.advance(0.1)
    assert roster.status()["left"] == ["web3:22281"]
    assert clock.now - recovered <= GONE
    roster.update([Sighting(MINE, 0.0), Sighting(WEB2, 0.3)])
    assert roster.others() == ["web2:7"]
    assert "web3:22281" not in places(roster)


def test_redis_emptied_between_two_rounds_is_a_recovery_too() -> None:
    clock = FakeClock()
    roster = three_nodes(clock)
    clock.advance(2.0)
    # No round failed, but this node's own record is gone before its expiry.
    roster.update([Sighting(MINE, 0.0)], own_kept=False)
    assert (roster.status()["left"], roster.others()) == ([], ["web2:7", "web3:4"])
    clock.advance(2.0)
    roster.update([Sighting(MINE, 0.0), Sighting(WEB2, 0.1)], own_kept=True)
    assert roster.status()["left"] == []
    clock.advance(GONE - 4.0)  # web3: heard 1 s before the first reading, 2 s not counted
    roster.update([Sighting(MINE, 0.0), Sighting(WEB2, 0.1)])
    assert roster.status()["left"] == []
    clock.advance(1.1)
    assert roster.status()["left"] == ["web3:22281"]


def test_a_node_missing_from_an_ordinary_reading_left_at_once() -> None:
    clock = FakeClock()
    roster = three_nodes(clock)
    clock.advance(2.0)
    roster.update([Sighting(MINE, 0.0), Sighting(WEB2, 0.0)])  # web3 stopped cleanly
    assert roster.status()["left"] == ["web3:22281"]
    # This node's record expired because this node was away (paused) past its
    # expiry: the reading is whole, nothing to hold.
    clock.advance(GONE + 0.1)
    roster.update([Sighting(MINE, 0.0)], own_kept=False)
    assert roster.status()["left"] == ["web2:22281", "web3:22281"]


def test_a_held_node_that_announces_again_then_stops_is_gone_at_once() -> None:
    clock = FakeClock()
    roster = three_nodes(clock)
    clock.advance(2.0)
    roster.failed("timed out")
    clock.advance(2.0)
    roster.update([Sighting(MINE, 0.0)])
    clock.advance(1.0)
    roster.update([Sighting(MINE, 0.0), Sighting(WEB2, 0.0), Sighting(WEB3, 0.0)])
    clock.advance(1.0)
    roster.update([Sighting(MINE, 0.0), Sighting(WEB2, 0.0)])  # web3 stopped cleanly
    assert roster.status()["left"] == ["web3:22281"]


def test_time_away_adds_up_over_recoveries_one_after_the_other() -> None:
    clock = FakeClock()
    roster = three_nodes(clock)
    clock.advance(6.0)
    roster.failed("timed out")
    roster.update([Sighting(MINE, 0.0)])  # 6 s not counted
    clock.advance(6.0)
    roster.failed("timed out")
    roster.update([Sighting(MINE, 0.0)])  # 6 s more
    assert roster.status()["left"] == []
    clock.advance(GONE - 1.1)  # web3, heard 1 s before the first outage: 7.9 s counted
    roster.update([Sighting(MINE, 0.0)])
    assert roster.status()["left"] == []
    clock.advance(0.2)
    roster.update([Sighting(MINE, 0.0)])
    assert roster.status()["left"] == ["web3:22281"]
    clock.advance(0.5)  # web2 was heard 0.5 s before, so 0.5 s later
    roster.update([Sighting(MINE, 0.0)])
    assert roster.status()["left"] == ["web2:22281", "web3:22281"]


def test_a_record_that_outlived_a_short_outage_still_counts_the_time_away() -> None:
    """The first reading after Redis is back may still list a node's old record.

    It expires before that node's first round after the outage (delayed by its
    own failing round's timeouts): the next reading misses it, and it has not
    left.
    """
    clock = FakeClock()
    roster = three_nodes(clock)
    clock.advance(2.0)
    roster.failed("timed out")
    clock.advance(4.0)
    # Back: web2's record from before the outage is still there, 6.5 s old.
    roster.update([Sighting(MINE, 0.0), Sighting(WEB2, 6.5), Sighting(WEB3, 0.2)])
    clock.advance(2.0)
    roster.update([Sighting(MINE, 0.0), Sighting(WEB3, 0.2)])  # web2's has expired
    assert roster.status()["left"] == []
    assert roster.others() == ["web2:7", "web3:4"]
    clock.advance(1.0)
    roster.update([Sighting(MINE, 0.0), Sighting(WEB2, 0.3), Sighting(WEB3, 0.2)])
    clock.advance(1.0)
    roster.update([Sighting(MINE, 0.0), Sighting(WEB3, 0.2)])  # heard afresh, then stopped
    assert roster.status()["left"] == ["web2:22281"]
