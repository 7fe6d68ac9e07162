"""The batch format between relay nodes: what a sender encodes, a receiver decodes and checks."""

from __future__ import annotations

import orjson
import pytest

from relay.errors import NotificationError
from relay.links.peer_batch import (
    MAX_BATCH_MESSAGES,
    decode_batch,
    encode_batch,
    encode_covered,
    encode_record,
)


def test_records_round_trip_with_instance_covered_and_the_message_bytes() -> None:
    first = orjson.dumps({"subscribers": ["A"], "uniqueID": "1", "touched": ["n1"]})
    second = orjson.dumps({"subscribers": ["B"], "text": "é 🎉", "touched": ["n1"]})
    body = encode_batch(
        [
            encode_record("default", encode_covered({"n3", "n2"}), first),
            encode_record('we"ird', encode_covered(()), memoryview(second)),
        ]
    )
    items = decode_batch(body)
    assert [(i.instance, i.covered) for i in items] == [
        ("default", frozenset({"n2", "n3"})),
        ('we"ird', frozenset()),
    ]
    assert items[0].notification.subscribers == {"A"}
    assert items[0].notification.touched == ("n1",)
    assert items[1].notification.body["text"] == "é 🎉"


def test_a_resent_record_says_so_and_others_do_not() -> None:
    message = b'{"subscribers":["A"],"uniqueID":"1","touched":["n1"]}'
    resent = encode_record("default", encode_covered({"n1"}), message, resent=True)
    assert orjson.loads(resent)["resent"] is True
    first = encode_record("default", encode_covered({"n1"}), message)
    assert b"resent" not in first
    items = decode_batch(encode_batch([first, resent]))
    assert [item.resent for item in items] == [False, True]


def test_covered_encodes_the_same_for_equal_sets() -> None:
    assert encode_covered({"b", "a"}) == encode_covered(["a", "b"]) == b'["a","b"]'


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"[", "not valid JSON"),
        (b"{}", "must be a JSON array"),
        (b"[1]", "record 0 must be a JSON object"),
        (b'[{"instance":"","message":{"subscribers":[]}}]', '"instance" must be'),
        (b'[{"instance":"i","covered":[1],"message":{"subscribers":[]}}]', '"covered" must be'),
        (b'[{"instance":"i","message":{"subscribers":"A"}}]', 'record 0: "subscribers" must'),
        (b'[{"instance":"i","resent":1,"message":{"subscribers":[]}}]', '"resent" must be'),
        (b'[{"instance":"i"}]', "record 0: the body must be a JSON object"),
    ],
)
def test_a_bad_batch_is_refused_naming_the_record(body: bytes, problem: str) -> None:
    with pytest.raises(NotificationError, match=problem):
        decode_batch(body)


def test_limits_bound_messages_covered_and_subscribers() -> None:
    record = encode_record("i", b"[]", b'{"subscribers":["A"]}')
    assert len(decode_batch(encode_batch([record] * MAX_BATCH_MESSAGES))) == MAX_BATCH_MESSAGES
    with pytest.raises(NotificationError, match="limit is 1024"):
        decode_batch(encode_batch([record] * (MAX_BATCH_MESSAGES + 1)))
    with pytest.raises(NotificationError, match='"covered" lists 3 nodes; the limit is 2'):
        decode_batch(
            encode_batch([encode_record("i", b'["a","b","c"]', b'{"subscribers":[]}')]),
            max_touched=2,
        )
    with pytest.raises(NotificationError, match='"subscribers" lists 2 keys'):
        decode_batch(
            encode_batch([encode_record("i", b"[]", b'{"subscribers":["A","B"]}')]),
            max_subscribers=1,
        )
