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
