"""Passwords outside ASCII against a real MariaDB: sent as Phorge's PHP client sends them."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from relay.cluster_status.driver import DatabaseChecker
from relay.config.cluster_status import ConnectionTarget
from tests.cluster_status.helpers import MONITOR_PRIVILEGES
from tests.mariadb_harness import MariaDBFactory


@pytest.mark.parametrize("password", ["Db-Pass€1", "pässwört", "plain-ascii"])
async def test_a_password_outside_ascii_reaches_the_server_as_utf8(
    mariadb: MariaDBFactory, password: str
) -> None:
    """The account is made over a UTF-8 session, as Phorge's are; the check gets in."""
    server = mariadb.start("solo", server_id=1)
    server.create_user("monitor8", password, MONITOR_PRIVILEGES)
    target = ConnectionTarget("127.0.0.1", server.port, "monitor8", SecretStr(password))
    checker = DatabaseChecker(target, connect_timeout=10, query_timeout=10, clock=time.monotonic)
    outcome = await checker.check()
    assert outcome.error_message is None
    assert outcome.ran
    wrong = ConnectionTarget("127.0.0.1", server.port, "monitor8", SecretStr(password + "x"))
    refused = DatabaseChecker(wrong, connect_timeout=10, query_timeout=10, clock=time.monotonic)
    assert (await refused.check()).error_code == 1045  # access denied, not a crash
