"""The presence log lines: the first reading counted and named, then joins and leaves."""

from __future__ import annotations

import logging

import pytest

from relay.links.presence_log import NAMED_IN_LOG, PresenceLog

LOG = logging.getLogger("relay.test.presence")


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    found = [record.getMessage() for record in caplog.records if record.name == LOG.name]
    caplog.clear()
    return found


def test_the_first_reading_then_who_joins_and_who_leaves(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOG.name)
    changes = PresenceLog(LOG, found_in="in the mesh", joined="the mesh", left="the mesh")
    changes.seen(["web2:7", "web3:9"])
    assert lines(caplog) == ["presence: 2 other nodes in the mesh: web2:7, web3:9"]
    changes.seen(["web2:7", "web3:9"])
    assert lines(caplog) == []
    changes.seen(["web3:9", "web4:1"])
    assert lines(caplog) == [
        "presence: node web4:1 joined the mesh",
        "presence: node web2:7 left the mesh",
    ]


def test_alone_or_among_many(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOG.name)
    where = "broker prefix 'relay'"
    PresenceLog(LOG, found_in=f"under {where}", joined=f"under {where}", left=where).seen([])
    assert lines(caplog) == ["presence: no other node under broker prefix 'relay'"]
    many = [f"web{n}:1" for n in range(NAMED_IN_LOG + 2)]
    PresenceLog(LOG, found_in="in the mesh", joined="", left="").seen(many)
    [line] = lines(caplog)
    assert line.startswith(f"presence: {len(many)} other nodes in the mesh: web0:1, ")
    assert line.endswith(" and 2 more")
