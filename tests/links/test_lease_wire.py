"""The cluster-status lease's names in Redis and its verdict format."""

from __future__ import annotations

import pytest

from relay.links.lease_wire import LeaseKeys, SharedVerdict, decode_verdict, holder_value


def test_names_sit_under_the_prefix() -> None:
    keys = LeaseKeys("relay")
    assert keys.lease == "relay:cluster-status:lease"
    assert keys.token == "relay:cluster-status:token"
    assert keys.verdicts == "relay:cluster-status:verdicts"
    assert keys.channel == "relay:cluster-status"
    assert holder_value("abc", 7) == "abc:7"


def test_a_verdict_round_trips_and_orders_by_token_then_seq() -> None:
    message = {"type": "relay.cluster.databases", "uniqueID": "u-1", "data": {"mode": "x"}}
    verdict = SharedVerdict(3, 9, "d1", message)
    back = decode_verdict(verdict.encode())
    assert back == verdict
    assert back.kind == "relay.cluster.databases"
    assert SharedVerdict(4, 1, "d", message).order > verdict.order


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1]",
        b'{"token": 1, "seq": 1, "digest": "d", "message": {"type": "t"}}',
        b'{"token": true, "seq": 1, "digest": "d", "message": {"type": "t", "uniqueID": "u"}}',
        b'{"token": 1, "digest": "d", "message": {"type": "t", "uniqueID": "u"}}',
    ],
)
def test_anything_else_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match="cluster-status verdict"):
        decode_verdict(raw)
