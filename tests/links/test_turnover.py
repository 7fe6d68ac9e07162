"""Who joined and who left, from one node's looks at its presence readings (fake clock)."""

from __future__ import annotations

from relay.links.turnover import MAX_PLACES, Turnover
from tests.support import FakeClock


def test_the_cluster_found_at_first_is_no_news_a_later_node_joined() -> None:
    clock = FakeClock()
    turnover = Turnover(clock, settle=2.0)
    turnover.look(["web2:22281"])
    clock.advance(1.0)
    turnover.look(["web2:22281", "web3:22281"])  # heard within the settling time
    assert (turnover.joined(), turnover.left()) == ([], [])
    clock.advance(1.5)
    turnover.look(["web2:22281", "web3:22281", "web4:22281"])
    assert (turnover.joined(), turnover.left()) == (["web4:22281"], [])


def test_a_node_left_until_it_is_back_and_a_newcomer_stays_joined() -> None:
    clock = FakeClock()
    turnover = Turnover(clock, settle=0.0)
    turnover.look(["web2:22281"])
    clock.advance(1.0)
    turnover.look(["web2:22281", "web3:22281"])
    turnover.look(["web3:22281"])
    assert (turnover.joined(), turnover.left()) == (["web3:22281"], ["web2:22281"])
    turnover.look([])
    assert turnover.left() == ["web2:22281", "web3:22281"]
    assert turnover.joined() == ["web3:22281"]  # told once; coming back is not news
    turnover.look(["web2:22281", "web3:22281"])
    assert (turnover.joined(), turnover.left()) == (["web3:22281"], [])


def test_places_are_remembered_within_a_bound() -> None:
    clock = FakeClock()
    turnover = Turnover(clock, settle=0.0)
    for port in range(MAX_PLACES + 5):
        turnover.look([f"web:{port}"])
    assert len(turnover.left()) == MAX_PLACES - 1
    assert "web:0" not in turnover.left()
