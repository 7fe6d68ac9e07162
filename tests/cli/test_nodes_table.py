"""``relay status --cluster``'s table from a ``nodes`` section (no node needed)."""

from __future__ import annotations

from relay.cli.nodes_table import render_nodes
from relay.cli.status_table import render_status


def member(node: str, worker: int | None, **fields: object) -> dict[str, object]:
    return {
        "node": node,
        "worker": worker,
        "fingerprint": f"FP{node}{worker}",
        "state": "fresh",
        "self": False,
        "browsers": 2,
        "rate_in": 1.0,
        "rate_out": 3.5,
        "broker": "up",
        "peers_up": 0,
        "peers": 0,
        "last_seen_seconds": 0.4,
        "version": "0.1.0",
        **fields,
    }


SECTION = {
    "prefix": "relay",
    "stale_after_seconds": 5.0,
    "gone_after_seconds": 8.0,
    "last_error": None,
    "members": [
        member("web1:10", 0, self=True),
        member("web1:10", 1, state="stale", last_seen_seconds=6.0, peers=2, peers_up=1),
    ],
    "totals": {"nodes": 1, "processes": 2, "stale": 1, "browsers": 4, "rate_in": 1.0},
}


def test_one_row_per_process_then_the_totals() -> None:
    text = render_nodes(SECTION)
    lines = text.splitlines()
    assert lines[0] == "Cluster under broker prefix relay"
    assert lines[1].split() == [
        "NODE",
        "WORKER",
        "STATE",
        "BROWSERS",
        "IN/S",
        "OUT/S",
        "BROKER",
        "PEERS",
        "LAST",
        "SEEN",
        "VERSION",
        "FINGERPRINT",
    ]
    assert lines[2].split()[:4] == ["web1:10", "0", "*", "fresh"]
    assert "1/2 up" in lines[3]
    assert "6 s ago" in lines[3]
    assert "  nodes     1 node, 2 processes (1 stale)" in lines
    assert "  browsers  4" in lines
    assert "stale after 5 s without an announcement, gone after 8 s" in text


def test_an_empty_or_failing_reading_says_so() -> None:
    text = render_nodes({"prefix": "relay", "last_error": "timed out"})
    assert "(no node has announced itself yet)" in text
    assert "could not reach Redis for its last reading: timed out" in text
    assert "0 nodes, 0 processes (0 stale)" in text


def test_relay_status_sums_the_section_up() -> None:
    text = render_status({"fingerprint": "F", "nodes": SECTION})
    assert "Nodes of the cluster" in text
    assert "1 node, 2 processes (1 stale), 4 browsers; relay status --cluster lists them" in text
    assert "members" not in text


def test_relay_status_names_the_nodes_that_joined_and_left() -> None:
    section = {**SECTION, "joined": ["web3:22281"], "left": ["web2:22281", "web4:22281"]}
    lines = render_status({"fingerprint": "F", "nodes": section}).splitlines()
    assert any(line.split() == ["joined", "web3:22281"] for line in lines)
    assert any(line.split() == ["left", "web2:22281,", "web4:22281"] for line in lines)
    quiet = render_status({"fingerprint": "F", "nodes": {**SECTION, "joined": [], "left": []}})
    assert any(line.split() == ["left", "-"] for line in quiet.splitlines())
