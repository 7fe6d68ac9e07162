"""Admin POST bodies, checked and stamped without a server."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from relay.core.instances import instance_from_query
from relay.core.notification import (
    MAX_DEPTH,
    parse_notification,
)
from relay.errors import NotificationError


def test_a_phorge_notification_is_kept_whole() -> None:
    body = {
        "key": "PHID-X",
        "type": "notification",
        "subscribers": ["PHID-A", "PHID-B"],
        "uniqueID": "u" * 32,
        "extra": {"nested": [1, 2]},
    }
    note = parse_notification(orjson.dumps(body))
    assert note.subscribers == {"PHID-A", "PHID-B"}
    assert note.touched == ()
    assert orjson.loads(note.stamped("F1")) == {**body, "touched": ["F1"]}


def test_stamping_appends_to_an_existing_touched_list() -> None:
    note = parse_notification(b'{"subscribers":["A"],"touched":["F1"]}')
    assert orjson.loads(note.stamped("F2"))["touched"] == ["F1", "F2"]


def test_unicode_survives_stamping_byte_for_byte() -> None:
    text = "café 東京 🚀 \u2028"
    note = parse_notification(orjson.dumps({"subscribers": ["A"], "text": text}))
    assert orjson.loads(note.stamped("F"))["text"] == text


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{nope", "not valid JSON"),
        (b"[1]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b"{}", '"subscribers" is missing'),
        (b'{"subscribers":{}}', '"subscribers" must be a list of strings'),
        (b'{"subscribers":"PHID-A"}', '"subscribers" must be a list of strings'),
        (b'{"subscribers":["A",2]}', '"subscribers" must be a list of strings'),
        (b'{"subscribers":["A"],"touched":"F"}', '"touched" must be a list of strings'),
    ],
)
def test_unusable_bodies_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(NotificationError, match=reason):
        parse_notification(raw)


def test_identity_is_the_unique_id_when_present() -> None:
    a = parse_notification(b'{"subscribers":["A"],"uniqueID":"abc","touched":["F1"]}')
    b = parse_notification(b'{"subscribers":["B"],"uniqueID":"abc"}')
    assert a.identity() == b.identity() == "id:abc"


def test_identity_digest_ignores_touched_and_key_order() -> None:
    a = parse_notification(b'{"subscribers":["A"],"type":"t","touched":["F1"]}')
    b = parse_notification(b'{"type":"t","subscribers":["A"],"touched":["F1","F2"]}')
    c = parse_notification(b'{"type":"u","subscribers":["A"]}')
    assert a.identity() == b.identity()
    assert a.identity() != c.identity()


def test_nesting_is_bounded_below_what_can_be_encoded_again() -> None:
    data: list[Any] = []
    deep = {"subscribers": ["A"], "data": data}
    inner = data
    for _ in range(MAX_DEPTH - 2):  # the body and "data" are two levels already
        inner.append([])
        inner = inner[0]
    note = parse_notification(orjson.dumps(deep))
    assert orjson.loads(note.stamped("F"))["data"] == deep["data"]
    inner.append({})
    with pytest.raises(NotificationError, match=f"more than {MAX_DEPTH} deep"):
        parse_notification(orjson.dumps(deep))


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    body = {"subscribers": ["A"], "text": "[{" * 1000}
    assert parse_notification(orjson.dumps(body)).body == body


def test_an_application_post_without_unique_id_gets_one() -> None:
    ids = iter(["first", "second"])
    posted = b'{"type":"workboards","subscribers":["A"]}'
    one = parse_notification(posted).identified(lambda: next(ids))
    two = parse_notification(posted).identified(lambda: next(ids))
    assert one.body == {"type": "workboards", "subscribers": ["A"], "uniqueID": "first"}
    assert (one.identity(), two.identity()) == ("id:first", "id:second")
    assert orjson.loads(one.stamped("F"))["uniqueID"] == "first"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"subscribers":["A"],"uniqueID":"phorge-made"}',
        b'{"subscribers":["A"],"uniqueID":7}',
        # A copy from a peer: the node it came from (relay or Aphlict) named it, or not.
        b'{"subscribers":["A"],"touched":["F1"]}',
    ],
)
def test_an_id_given_and_a_peers_copy_are_left_as_they_are(raw: bytes) -> None:
    note = parse_notification(raw)
    assert note.identified(lambda: "new") is note


def test_instance_query_defaults() -> None:
    assert instance_from_query(None) == "default"
    assert instance_from_query("") == "default"
    assert instance_from_query("acme") == "acme"
