"""The handoff's wire format: messages, pieces, batches, connection records, frame boundaries."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from relay.links.broker_wire import StreamId
from relay.links.handoff_wire import (
    BATCH_BYTES,
    OWED_BYTES_LIMIT,
    ConnectionState,
    HandoffError,
    Kind,
    Reassembly,
    abort_body,
    admin_connections_body,
    admin_listeners_of,
    batches,
    decode,
    encode,
    hello_body,
    pieces,
    position_body,
    position_of,
    released_body,
    released_keys,
    released_of,
    released_unadopted,
    resumed_of,
    successor_pidfile,
    takes_admin_connections,
    takes_owed_bytes,
)

STATE = ConnectionState(
    listener=0,
    address="127.0.0.1",
    instance="phorge",
    keys=("PHID-A", "PHID-B"),
    pinged=True,
    silent_for=1.5,
    unparsed=b"\x81\x85",
    fragments=b"hel",
)


def test_a_message_round_trips() -> None:
    assert decode(encode(Kind.DONE, {"moved": 3})) == (Kind.DONE, {"moved": 3})


@pytest.mark.parametrize("message", [b"", b"\x63{}", b"\x01[1]", b"\x01{"])
def test_garbage_is_a_handoff_error(message: bytes) -> None:
    with pytest.raises(HandoffError):
        decode(message)


def test_a_record_round_trips() -> None:
    assert ConnectionState.from_json(STATE.to_json()) == STATE
    with pytest.raises(HandoffError):
        ConnectionState.from_json({"l": 0})


def test_a_record_with_owed_bytes_round_trips_and_one_without_says_nothing_of_them() -> None:
    owing = dataclasses.replace(STATE, owed=b"\x81\x05hello\x81")
    assert ConnectionState.from_json(owing.to_json()) == owing
    assert "o" in owing.to_json()
    # Owed nothing: the record is what older releases write and read.
    assert "o" not in STATE.to_json()
    assert ConnectionState.from_json(STATE.to_json()).owed == b""


def test_owed_bytes_count_in_a_record_s_size_and_a_record_owed_the_most_fits_a_message() -> None:
    owing = dataclasses.replace(STATE, owed=bytes(OWED_BYTES_LIMIT))
    assert owing.size() >= len(orjson.dumps(owing.to_json()))
    assert owing.size() > BATCH_BYTES  # a batch of its own
    assert list(batches([STATE, owing, STATE])) == [[0], [1], [2]]
    message = encode(Kind.CONNECTIONS, {"batch": 0, "connections": [owing.to_json()]})
    # base64: 4/3 of the bytes, under half the channel's limit (64 MiB, relay.listeners.handoff).
    assert len(message) < OWED_BYTES_LIMIT * 4 // 3 + 1024 < 64 * 1024 * 1024 // 2


@pytest.mark.parametrize("length", [0, 1, 9, 10, 11, 25])
def test_pieces_reassemble(length: int) -> None:
    message = bytes(range(length))
    parts = pieces(message, size=10)
    assert all(len(part) <= 10 for part in parts)
    whole = Reassembly(limit=100)
    results = [whole.add(part) for part in parts]
    assert results[:-1] == [None] * (len(parts) - 1)
    assert results[-1] == message


def test_reassembly_refuses_a_message_over_its_limit() -> None:
    whole = Reassembly(limit=5)
    first, second, *_ = pieces(b"x" * 20, size=4)
    assert whole.add(first) is None
    with pytest.raises(HandoffError):
        whole.add(second)


def test_batches_bound_count_and_size() -> None:
    states = [STATE] * 7
    assert list(batches(states, count=3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batches(states, size=STATE.size() * 2)) == [[0, 1], [2, 3], [4, 5], [6]]
    assert list(batches([], count=3)) == []


def test_a_stream_position_round_trips_through_a_message() -> None:
    position = ({"phorge": StreamId(1700000000000, 3)}, 1699999990000)
    kind, body = decode(encode(Kind.DONE, {"moved": 2} | position_body(position)))
    assert (kind, position_of(body)) == (Kind.DONE, position)
    assert position_of({"moved": 2}) is None  # mesh mode: no position


@pytest.mark.parametrize("raw", [{"ids": {"a": "x-y"}, "synced": 1}, {"ids": []}, "no"])
def test_an_unreadable_position_is_a_handoff_error(raw: object) -> None:
    with pytest.raises(HandoffError):
        position_of({"position": raw})


def test_an_abort_names_the_batches_the_old_process_serves_again() -> None:
    kind, body = decode(encode(Kind.ABORT, abort_body({3, 1})))
    assert kind is Kind.ABORT
    assert resumed_of(body) == {1, 3}
    assert resumed_of(abort_body([])) == set()
    with pytest.raises(HandoffError, match="not a list of batches"):
        resumed_of({"resumed": ["x"]})
    with pytest.raises(HandoffError):
        resumed_of({})


def test_released_names_the_batches_the_successor_gave_back() -> None:
    kind, body = decode(encode(Kind.RELEASED, released_body({2, 0})))
    assert kind is Kind.RELEASED
    assert released_of(body) == {0, 2}
    assert released_of(released_body([])) == set()
    with pytest.raises(HandoffError, match="not a list of batches"):
        released_of({"released": [None]})


def test_released_carries_the_subscriptions_changed_in_the_successor() -> None:
    changed = {(2, 5): frozenset({"PHID-B", "PHID-A"}), (0, 0): frozenset()}
    _, body = decode(encode(Kind.RELEASED, released_body({0, 2}, changed)))
    assert released_of(body) == {0, 2}
    assert released_keys(body) == {(2, 5): ("PHID-A", "PHID-B"), (0, 0): ()}
    assert released_keys(released_body([1])) == {}  # none changed (or an older successor)


def test_released_names_the_connections_the_successor_could_not_serve() -> None:
    _, body = decode(encode(Kind.RELEASED, released_body({0, 2}, None, [(2, 4), (0, 1)])))
    assert released_unadopted(body) == {(0, 1), (2, 4)}
    assert released_unadopted(released_body([1])) == set()  # it served every one
    # An older successor does not say: any may have failed.
    assert released_unadopted({"released": [1]}) is None
    with pytest.raises(HandoffError, match="not a list of connections"):
        released_unadopted({"released": [1], "unadopted": [[1]]})


@pytest.mark.parametrize("raw", [[[0, 1]], [[0, 1, "PHID-A"]], [[0, 1, [2]]], [["x", 1, []]], "no"])
def test_unreadable_changed_subscriptions_are_a_handoff_error(raw: object) -> None:
    with pytest.raises(HandoffError, match="not a list of changed subscriptions"):
        released_keys({"released": [0], "keys": raw})


def test_waiting_admin_connections_name_their_listeners() -> None:
    body = decode(encode(Kind.ADMIN_CONNECTIONS, admin_connections_body([0, 1, 0])))[1]
    assert admin_listeners_of(body, 3) == [0, 1, 0]


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        ({}, "not a list of admin listeners"),
        ({"listeners": ["first"]}, "not a list of admin listeners"),
        ({"listeners": [0, 1]}, "2 admin listeners named for 3 connections"),
        ({"listeners": [0, -1, 0]}, "names one below 0"),
    ],
)
def test_admin_connections_without_one_listener_each_are_a_handoff_error(
    body: dict[str, object], refusal: str
) -> None:
    with pytest.raises(HandoffError, match=refusal):
        admin_listeners_of(body, 3)


def test_a_successor_says_it_takes_admin_connections_and_an_older_one_does_not() -> None:
    assert takes_admin_connections(hello_body("0.2.0", 17))
    assert not takes_admin_connections({"version": "0.1.0", "pid": 17})


def test_a_successor_says_it_takes_owed_bytes_and_an_older_one_does_not() -> None:
    assert takes_owed_bytes(hello_body("0.2.0", 17))
    assert not takes_owed_bytes({"version": "0.1.0", "pid": 17, "admin_connections": True})


def test_a_successor_names_the_pidfile_it_writes_and_an_older_one_none() -> None:
    assert successor_pidfile(hello_body("0.2.0", 17, "/run/relay/relay.pid")) == (
        "/run/relay/relay.pid"
    )
    assert successor_pidfile(hello_body("0.2.0", 17)) is None
    assert successor_pidfile({"version": "0.1.0", "pid": 17, "pidfile": 3}) is None
