"""``relay status``'s table, from the JSON ``GET /status/`` answers."""

from __future__ import annotations

from relay.cli.status_table import render_status

STATUS = {
    "instance": "acme",
    "uptime": 3_723_000,
    "clients.active": 12,
    "clients.total": 40,
    "messages.in": 5,
    "messages.out": 60,
    "version": 7,
    "history.size": 5,
    "history.age": 12_500,
    "fingerprint": "AbCdEfGhIjKlMnOp",
    "cluster": [
        {"host": "10.0.0.1", "port": 22281, "protocol": "http", "self": True, "state": "self"},
        {
            "host": "10.0.0.2",
            "port": 22281,
            "protocol": "https",
            "self": False,
            "state": "down",
            "sent": 10,
            "failed": 3,
            "dropped": 0,
            "queue": 7,
            "last_error": "cannot connect",
            "last_latency_ms": None,
        },
    ],
    "broker": {
        "url": "redis://127.0.0.1:6379/0",
        "state": "up",
        "since_seconds": 5.2,
        "last_error": None,
        "published": 4,
        "received": 1,
        "queue": 0,
        "dropped": 2,
        "reconnects": 1,
        "stale_subscriptions": 0,
    },
    "overload": {"policy": "refuse", "active": False, "refused": 1, "episodes": 2},
}


def test_the_table_shows_the_figures_and_one_row_per_peer() -> None:
    lines = render_status(STATUS).splitlines()
    assert lines[:7] == [
        "relay node AbCdEfGhIjKlMnOp, instance acme",
        "  uptime    1h 2m",
        "  browsers  12 connected, 40 since start",
        "  messages  5 in, 60 out",
        "  history   5 kept, the oldest from 12.5 s ago",
        "  protocol  version 7",
        "",
    ]
    peers = lines[lines.index("Cluster peers") + 1 :][:3]
    assert peers[1].split() == ["http://10.0.0.1:22281", "this", "node"]
    assert peers[2].split() == [
        "https://10.0.0.2:22281", "down", "10", "3", "0", "7", "-", "cannot", "connect",
    ]  # fmt: skip


def section(text: str, title: str) -> list[str]:
    """The lines of the block titled ``title``, up to the blank line after it."""
    lines = text.splitlines()
    start = lines.index(title) + 1
    return lines[start : lines.index("", start)]


def test_the_broker_and_overload_sections_read_as_words() -> None:
    text = render_status(STATUS)
    assert section(text, "Broker") == [
        "  redis         redis://127.0.0.1:6379/0",
        "  state         up for 5.2 s",
        "  last error    -",
        "  posts         4 published, 0 queued, 2 dropped",
        "  received      1 message, this node's own included",
        "  reconnects    1",
        "  resubscribed  0 times, the subscription gone silent",
    ]
    assert section(text, "Overload") == [
        "  policy  refuse: new posts are answered 503 while a peer's queue is full",
        "  now     every peer keeps up",
        "  so far  2 episodes, 1 post refused",
    ]
    for raw in ("since_seconds", "stale_subscriptions", "False", "True", "None"):
        assert raw not in text


def test_an_overload_under_way_and_a_broker_down_say_so() -> None:
    text = render_status(
        {
            **STATUS,
            "broker": {
                **STATUS["broker"],  # type: ignore[dict-item]
                "state": "down",
                "since_seconds": 95,
                "last_error": "ConnectionError: refused",
            },
            "overload": {"policy": "drop", "active": True, "refused": 0, "episodes": 1},
        }
    )
    assert section(text, "Broker")[1:3] == [
        "  state         down for 1m 35s",
        "  last error    ConnectionError: refused",
    ]
    assert section(text, "Overload") == [
        "  policy  drop: a full peer queue drops its oldest messages",
        "  now     a peer's queue is full",
        "  so far  1 episode, 0 posts refused",
    ]


def test_sections_it_does_not_know_are_shown_as_blocks_in_words() -> None:
    text = render_status(
        {
            **STATUS,
            "broker": {"url": "redis://127.0.0.1:6379/0", "shard_count": 3},
            "shadow_copy": {"enabled": True, "last_seen": None, "peers": ["a"]},
        }
    )
    assert section(text, "Broker") == [
        "  redis         redis://127.0.0.1:6379/0",
        "  state         ?",
        "  last error    -",
        "  posts         ? published, ? queued, ? dropped",
        "  received      ? messages, this node's own included",
        "  reconnects    ?",
        "  resubscribed  ? times, the subscription gone silent",
        "  shard count   3",
    ]
    assert section(text, "Shadow copy") == [
        "  enabled    yes",
        "  last seen  -",
        "  peers      (1 entry; see --json)",
    ]


def test_a_node_without_peers_says_so() -> None:
    text = render_status({**STATUS, "cluster": [], "history.age": None})
    assert "  (no peers configured)" in text
    assert "  history   5 kept\n" in text


def test_long_uptimes_and_odd_values_read_plainly() -> None:
    days = render_status({**STATUS, "uptime": 3 * 86_400_000 + 4 * 3_600_000, "broker": {}})
    assert "Broker" not in days
    assert "  uptime    3d 4h" in days
    minutes = render_status({**STATUS, "uptime": 95_000, "note": None, "shards": [1, 2]})
    assert "  uptime    1m 35s" in minutes
    assert "  note    -" in minutes
    assert "  shards  (2 entries; see --json)" in minutes
    assert "uptime    ?" in render_status({**STATUS, "uptime": None})


def test_an_ipv6_peer_is_named_by_a_url_with_its_address_in_brackets() -> None:
    peer = {"host": "fd00::2", "port": 22281, "protocol": "http", "self": False, "state": "up"}
    lines = render_status({**STATUS, "cluster": [peer]}).splitlines()
    assert lines[-1].split()[:2] == ["http://[fd00::2]:22281", "up"]


def test_the_process_section_names_the_code_its_start_and_the_adopted_browsers() -> None:
    process = {"version": "0.2.0", "started_at": "2026-12-06T17:40:00Z", "pid": 4242}
    text = render_status({**STATUS, "process": {**process, "adopted": 1}})
    assert section(text, "Process") == [
        "  code     relay 0.2.0, pid 4242",
        "  started  2026-12-06T17:40:00Z (UTC)",
        "  adopted  1 browser connection in a handoff",
    ]
    fresh = render_status({**STATUS, "process": {**process, "adopted": 0}})
    assert section(fresh, "Process")[2] == "  adopted  0 browser connections in a handoff"
