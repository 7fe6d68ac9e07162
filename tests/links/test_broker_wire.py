"""What relay keeps in Redis and sends through it: names, stream ids, frames (no Redis needed)."""

from __future__ import annotations

import pytest

from relay.links.broker_wire import Keys, StreamId, frame, unframe


def test_names_live_under_the_prefix_and_channels_give_back_their_instance() -> None:
    keys = Keys("relay-a")
    assert keys.stream("acme") == "relay-a:history:acme"
    assert keys.channel("acme") == "relay-a:messages:acme"
    assert keys.pattern == "relay-a:messages:*"
    assert keys.instance_of(b"relay-a:messages:acme") == "acme"
    assert keys.instance_of(b"relay-a:messages:a:b*c") == "a:b*c"
    assert keys.instance_of(b"relay-a:ping:XYZ") is None
    assert keys.instance_of(b"relay-b:messages:acme") is None


def test_stream_ids_order_by_time_then_sequence() -> None:
    assert StreamId.parse(b"1700000000000-3") == StreamId(1700000000000, 3)
    assert StreamId.parse("5") == StreamId(5, 0)
    assert StreamId(5, 9) < StreamId(6, 0) < StreamId(6, 1)
    assert str(StreamId(7, 2)) == "7-2"
    with pytest.raises(ValueError, match="invalid literal"):
        StreamId.parse(b"not-an-id")


def test_frames_carry_id_origin_and_the_message_untouched() -> None:
    payload = b'{"subscribers":["A B"],"text":"two  spaces"}'
    data = frame(b"17-0", b"ORIGINfingerprnt", payload)
    assert unframe(data) == (StreamId(17, 0), b"ORIGINfingerprnt", payload)
    for broken in (b"17-0", b"17-0 origin", b" origin {}"):
        with pytest.raises(ValueError, match="without a stream id and an origin"):
            unframe(broken)
