"""The supervisor in this test's event loop, with real worker processes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import orjson
import pytest

from relay.config import load_config
from relay.links.backoff import Backoff
from relay.process.systemd import Notifier
from relay.workers.supervisor import Supervisor
from tests.redis_harness import RedisServer
from tests.support import WAIT, eventually, local_config

pytestmark = pytest.mark.slow


async def test_a_hung_worker_is_killed_and_replaced_while_the_other_serves_on(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(local_config(workers=2, broker={"url": redis_server.url})))
    supervisor = Supervisor(
        load_config(path),
        str(path),
        count=2,
        systemd=Notifier({}),  # outside systemd
        backoff=Backoff,
        watchdog=1.0,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(supervisor.run(stop))
    try:
        async with asyncio.timeout(WAIT):
            await supervisor.up.wait()
        before = supervisor.pids
        assert None not in before
        hung = before[1]
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)  # alive, but its event loop runs no more

        async def replaced() -> bool:
            now = supervisor.pids
            return now[1] not in (None, hung) and "serves again" in caplog.text

        with caplog.at_level(logging.INFO, logger="relay.workers"):
            await eventually(replaced, "the hung worker is replaced by one that serves")
        assert supervisor.pids[0] == before[0]  # the other one never stopped
        assert f"worker 1 (pid {hung}) has not pinged its watchdog" in caplog.text
        assert "was killed by SIGKILL; restarting it" in caplog.text
        with pytest.raises(ProcessLookupError):
            os.kill(hung, 0)
    finally:
        stop.set()
        await running
    assert supervisor.pids == [None, None]
