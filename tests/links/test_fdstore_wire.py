"""What relay keeps in systemd's file descriptor store: names, messages, LISTEN_FDS, the state."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from relay.links.broker_wire import StreamId
from relay.links.fdstore_wire import (
    FdStoreError,
    Passed,
    StoredState,
    browser_room,
    chunks,
    listen_fds,
    listener_name,
    remove_message,
    socket_key,
    store_message,
)
from relay.links.handoff_wire import ConnectionState
from relay.links.lease_wire import SharedVerdict

STATE = ConnectionState(
    listener=0,
    address="127.0.0.1",
    instance="phorge",
    keys=("PHID-A",),
    pinged=False,
    silent_for=2.0,
    unparsed=b"\x81",
)


def test_store_and_remove_messages_say_what_sd_notify_expects() -> None:
    assert store_message("relay-browser") == b"FDSTORE=1\nFDNAME=relay-browser"
    assert store_message("relay-state", poll=False).endswith(b"\nFDPOLL=0")
    assert remove_message("relay-admin-0") == b"FDSTOREREMOVE=1\nFDNAME=relay-admin-0"
    assert listener_name("client", 2) == "relay-client-2"


def test_browsers_fit_in_what_listen_fdnames_can_name() -> None:
    others = ["relay-admin-0", "relay-client-0", "relay-state"]
    room = browser_room(others)
    assert 65_000 < room < 65_536
    names = ":".join([*others, *["b"] * room])
    assert len(f"LISTEN_FDNAMES={names}") <= 32 * 4096 - 1  # execve's MAX_ARG_STRLEN, with NUL
    assert len(f"LISTEN_FDNAMES={names}:b") > 32 * 4096 - 1


def test_descriptors_go_253_to_a_message() -> None:
    groups = list(chunks(list(range(600))))
    assert [len(group) for group in groups] == [253, 253, 94]
    assert [fd for group in groups for fd in group] == list(range(600))
    assert list(chunks([])) == []


def test_listen_fds_names_each_descriptor_from_3() -> None:
    environ = {"LISTEN_PID": "42", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "a:b:c"}
    assert listen_fds(environ, 42) == [("a", 3), ("b", 4), ("c", 5)]
    # Inherited from a parent: the descriptors are not this process' to take.
    assert listen_fds(environ, 43) == []
    assert listen_fds({}, 42) == []
    assert listen_fds({"LISTEN_PID": "42", "LISTEN_FDS": "2"}, 42) == [
        ("unknown", 3),
        ("unknown", 4),
    ]


@pytest.mark.parametrize(
    "environ",
    [
        {"LISTEN_PID": "42", "LISTEN_FDS": "two"},
        {"LISTEN_PID": "42", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "a:b"},
    ],
)
def test_malformed_listen_variables_are_refused(environ: dict[str, str]) -> None:
    with pytest.raises(FdStoreError):
        listen_fds(environ, 42)


def test_passed_descriptors_are_sorted_by_name() -> None:
    passed = Passed.sort(
        [
            ("relay-admin-0", 3),
            ("b", 4),
            ("relay-client-0", 5),
            ("b", 6),
            ("relay-state", 7),
            ("relay-client-0", 8),
            ("other", 9),
            ("relay-client-x", 10),
            ("relay-waiting-1", 11),
            ("relay-waiting-0", 12),
            ("relay-waiting-1", 13),
        ]
    )
    assert passed.clients == {0: 5}
    assert passed.admins == {0: 3}
    assert passed.browsers == [4, 6]
    assert passed.waiting == [(1, 11), (0, 12), (1, 13)]
    assert passed.states == [7]
    assert passed.unknown == [("relay-client-0", 8), ("other", 9), ("relay-client-x", 10)]
    assert passed.names == {
        "relay-admin-0",
        "relay-client-0",
        "b",
        "relay-state",
        "other",
        "relay-client-x",
        "relay-waiting-0",
        "relay-waiting-1",
    }
    assert sorted(passed.all_fds()) == list(range(3, 14))
    assert passed
    assert Passed.sort([("relay-waiting-0", 3)])  # all that was kept: still something
    assert not Passed.sort([])


def test_a_socket_is_keyed_by_its_two_addresses() -> None:
    assert socket_key(("127.0.0.1", 80), ("10.0.0.1", 5555)) == "[127.0.0.1]:80>[10.0.0.1]:5555"
    assert socket_key(("::1", 80, 0, 0), ("::1", 1, 0, 0)) == "[::1]:80>[::1]:1"


def test_the_state_round_trips_and_knows_its_age() -> None:
    state = StoredState(7, "1.2", 1000.0, {"k": STATE}, history=[["x"]])
    again = StoredState.decode(state.encode())
    assert again == state
    assert again.age(now=1002.5) == 2.5
    assert again.position is None  # mesh mode: none stored


def test_a_browser_owed_bytes_is_kept_where_an_older_release_does_not_look() -> None:
    """Under ``owing``: an older release finds no state for its socket and closes it.

    It would otherwise serve it with the owed bytes dropped, its stream cut
    mid-frame. The others it reads as ever: the format is the same.
    """
    owing = dataclasses.replace(STATE, owed=b"\x81\x7e")
    state = StoredState(7, "1.2", 1000.0, {"k": STATE, "slow": owing})
    raw = orjson.loads(state.encode())
    assert raw["format"] == 1
    assert list(raw["connections"]) == ["k"]  # what an older release reads
    assert list(raw["owing"]) == ["slow"]
    assert StoredState.decode(state.encode()) == state  # this one reads both


def test_a_state_of_an_older_release_has_no_browser_owed_anything() -> None:
    older = orjson.loads(StoredState(7, "1.1", 1000.0, {"k": STATE}).encode())
    del older["owing"]
    assert StoredState.decode(orjson.dumps(older)).connections == {"k": STATE}


def test_a_broker_mode_state_keeps_the_stream_position() -> None:
    position = ({"default": StreamId(1700, 3), "other": StreamId(1701, 0)}, 1650)
    state = StoredState(7, "1.2", 1000.0, {"k": STATE}, position=position)
    assert StoredState.decode(state.encode()).position == position


def test_a_broker_mode_state_keeps_the_verdicts_announced() -> None:
    verdict = SharedVerdict(3, 7, "d7", {"type": "relay.cluster.databases", "uniqueID": "v7"})
    state = StoredState(7, "1.2", 1000.0, verdicts=[verdict])
    assert StoredState.decode(state.encode()).verdicts == [verdict]
    assert StoredState.decode(StoredState(7, "1.2", 1000.0).encode()).verdicts == []


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        orjson.dumps({"format": 99}),
        orjson.dumps({"format": 1, "pid": 1, "version": "v", "stored_at": 0}),
        orjson.dumps(
            {"format": 1, "pid": 1, "version": "v", "stored_at": 0, "connections": {"k": {}}}
        ),
        orjson.dumps({"format": 1, "pid": 1, "version": "v", "stored_at": 0, "connections": []}),
        orjson.dumps(
            {"format": 1, "pid": 1, "version": "v", "stored_at": 0, "connections": {}, "owing": []}
        ),
        orjson.dumps(
            {
                "format": 1,
                **{"pid": 1, "version": "v", "stored_at": 0, "connections": {}},
                "position": {"ids": {"default": "nope"}, "synced": None},
            }
        ),
        orjson.dumps(
            {
                "format": 1,
                **{"pid": 1, "version": "v", "stored_at": 0, "connections": {}},
                "verdicts": ["not a verdict"],
            }
        ),
    ],
)
def test_a_malformed_state_is_refused(data: bytes) -> None:
    with pytest.raises(FdStoreError):
        StoredState.decode(data)
