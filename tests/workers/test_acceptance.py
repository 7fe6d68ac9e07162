"""Acceptance: ``--workers 2`` on a real Redis, browsers spread over both workers.

Each browser receives each post once whichever worker it and the post
landed on; ``kill -9`` of one worker: it is restarted, and the browsers of
the other worker never stop receiving.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from tests.harness import Relays, run_serve
from tests.redis_harness import RedisServer
from tests.support import WAIT, Browser, local_config, notification
from tests.workers.spread import spread_browsers

pytestmark = pytest.mark.slow

KEY = "PHID-WORKERS"
BROWSERS = 16
#: Upper bounds on the posting loop around the kill: posts, and seconds.
MAX_POSTS = 3000
POSTING_SECONDS = 3 * WAIT


class Poster:
    """An application server posting over a new connection each time, so posts spread too."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.url = f"http://127.0.0.1:{port}/"
        self.accepted: list[str] = []
        self.answered_by: set[str] = set()
        self.refused = 0

    async def post(self, unique_id: str) -> bool:
        """Post once; a post the node did not take (its worker died) is retried by the caller."""
        body = orjson.dumps(notification(KEY, unique_id=unique_id))
        try:
            async with self.session.post(self.url, data=body) as reply:
                if reply.status != 200:
                    self.refused += 1
                    return False
                self.answered_by.add((await reply.json())["fingerprint"])
        except aiohttp.ClientError:
            self.refused += 1
            return False
        self.accepted.append(unique_id)
        return True

    async def post_until_accepted(self, unique_id: str) -> None:
        async with asyncio.timeout(WAIT):
            while not await self.post(unique_id):
                pass


async def status(session: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    """The node's status; asked again when it lands on a worker that just died."""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{port}/status/") as reply:
                    assert reply.status == 200
                    return await reply.json()  # type: ignore[no-any-return]
            except aiohttp.ClientError:
                continue


async def received_ids(browser: Browser, wanted: set[str]) -> Counter[str]:
    """Every uniqueID ``browser`` gets until it has all of ``wanted`` (bounded), then a barrier."""
    seen: Counter[str] = Counter()
    async with asyncio.timeout(WAIT):
        while not wanted <= set(seen):
            message = await browser.recv()
            seen[message["uniqueID"]] += 1
    for message in await browser.drain():
        seen[message["uniqueID"]] += 1
    return seen


async def test_two_workers_deliver_each_post_once_and_survive_a_killed_worker(
    relays: Relays, redis_server: RedisServer
) -> None:
    [node] = await relays.broker(1, redis_server.url, workers=2).start()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        browsers = await spread_browsers(
            session, (node.client_port, node.admin_port), key=KEY, count=BROWSERS, status=status
        )
        before = (await status(session, node.admin_port))["workers"]
        pids = [worker["pid"] for worker in before]

        # Each post reaches every browser once, whichever worker took it.
        poster = Poster(session, node.admin_port)
        first = [f"before-{n}" for n in range(20)]
        for unique_id in first:
            await poster.post_until_accepted(unique_id)
        assert len(poster.answered_by) == 2, "the posts did not reach both workers"
        for browser in browsers:
            seen = await received_ids(browser, set(first))
            assert seen == Counter(first)

        # kill -9 one worker while posting goes on.
        victim = pids[1]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + POSTING_SECONDS
        restarted = False
        attempted: list[str] = []
        later: list[str] = []
        posted_since_restart = 0
        for n in range(MAX_POSTS):
            assert time.monotonic() < deadline, "the worker was not restarted in time"
            attempted.append(f"after-{n}")
            if await poster.post(attempted[-1]):
                later.append(attempted[-1])
            if restarted:
                posted_since_restart += 1
                if posted_since_restart == 20:
                    break
            else:
                worker = (await status(session, node.admin_port))["workers"][1]
                restarted = worker.get("pid") not in (None, victim) and (
                    worker["state"] == "serving"
                )
        assert restarted
        now = (await status(session, node.admin_port))["workers"]
        assert now[0]["pid"] == pids[0]
        assert now[1]["restarts"] == 1
        assert f"worker 1 (pid {victim}) was killed by SIGKILL" in node.log

        # The browsers of the surviving worker kept receiving: every post accepted
        # before, during and after the restart, each exactly once. (A post whose
        # answer was lost with the killed worker may or may not have been
        # delivered; never twice.)
        survivors, dropped = [], []
        for browser in browsers:
            try:
                pending = Counter(m["uniqueID"] for m in await browser.drain())
            except ConnectionClosed:
                dropped.append(browser)
                continue
            survivors.append(browser)
            seen = pending + await received_ids(browser, set(later) - set(pending))
            assert all(seen[unique_id] == 1 for unique_id in later), "a survivor missed posts"
            assert set(seen) <= set(attempted)
            assert max(seen.values()) == 1, "a survivor got a post twice"
        assert survivors, "no browser stayed on the surviving worker"
        assert dropped, "no browser was on the killed worker"

        # The dropped browsers reconnect (to either worker) and get posts once again.
        again = [await Browser.open(node.client_port) for _ in dropped]
        for browser in again:
            await browser.subscribe(KEY)
        last = [f"last-{n}" for n in range(10)]
        for unique_id in last:
            await poster.post_until_accepted(unique_id)
        for browser in survivors + again:
            assert await received_ids(browser, set(last)) == Counter(last)
        for browser in survivors + again:
            await browser.close()


def test_workers_without_a_broker_are_refused_naming_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(local_config(workers=2)))
    result = run_serve("--config", str(path))
    assert result.returncode == 1
    assert f'{path}: workers: 2 workers need a "broker" section' in result.stderr
    assert "Traceback" not in result.stderr

    path.write_bytes(orjson.dumps(local_config()))
    result = run_serve("--config", str(path), "--workers", "2")
    assert result.returncode == 1
    assert f'{path}: --workers 2: 2 workers need a "broker" section' in result.stderr
    assert "Traceback" not in result.stderr
