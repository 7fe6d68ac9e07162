"""A ``--workers 2`` node's ``/status/`` and ``/metrics`` add up to what its users did.

Real supervisor and worker processes on a real Redis, browsers spread over
both workers, posts over fresh connections (so both workers take some).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.workers.supervisor import WORKER_WATCHDOG
from tests.harness import Relays, children_of
from tests.redis_harness import RedisServer
from tests.support import WAIT, Browser, notification
from tests.workers.spread import spread_browsers

pytestmark = pytest.mark.slow

KEY = "PHID-FIGURES"
BROWSERS = 12
POSTS = 20


async def node_status(session: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    """``/status/`` on a fresh connection: whichever worker the kernel picks answers."""
    async with session.get(f"http://127.0.0.1:{port}/status/") as reply:
        assert reply.status == 200
        return await reply.json()  # type: ignore[no-any-return]


async def _answer_from_either(session: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    """``/status/`` asked 8 times at once, where one worker is stopped: the first answer.

    A request the kernel hands to the stopped worker waits until it times out;
    each of the others goes to either worker, so one of 8 at once all but
    surely reaches the one that answers.
    """
    while True:
        asking = [asyncio.ensure_future(node_status(session, port)) for _ in range(8)]
        try:
            for answer in asyncio.as_completed(asking):
                with contextlib.suppress(TimeoutError):
                    return await answer
        finally:
            for request in asking:
                request.cancel()
            await asyncio.gather(*asking, return_exceptions=True)


async def node_metrics(session: aiohttp.ClientSession, port: int) -> dict[str, float]:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as reply:
        assert reply.status == 200
        text = await reply.text()
    return {
        sample.name
        + orjson.dumps(sample.labels, option=orjson.OPT_SORT_KEYS).decode(): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_status_totals_add_up_to_the_browsers_and_posts_over_both_workers(
    relays: Relays, redis_server: RedisServer
) -> None:
    [node] = await relays.broker(1, redis_server.url, workers=2).start()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        browsers = await spread_browsers(
            session,
            (node.client_port, node.admin_port),
            key=KEY,
            count=BROWSERS,
            status=node_status,
        )

        answered_by = set()
        for n in range(POSTS):
            body = orjson.dumps(notification(KEY, unique_id=f"post-{n}"))
            async with session.post(f"http://127.0.0.1:{node.admin_port}/", data=body) as reply:
                assert reply.status == 200
                answered_by.add((await reply.json())["fingerprint"])
        assert len(answered_by) == 2, "the posts did not reach both workers"
        for browser in browsers:
            async with asyncio.timeout(WAIT):
                got = [(await browser.recv())["uniqueID"] for _ in range(POSTS)]
            assert sorted(got) == sorted(f"post-{n}" for n in range(POSTS))

        # Whichever worker answers, the node's figures are what the test did.
        for _ in range(6):
            status = await node_status(session, node.admin_port)
            assert status["clients.active"] == BROWSERS
            assert status["clients.total"] == BROWSERS
            # Every worker sees each post once: the node took POSTS, not twice that.
            assert status["messages.in"] == POSTS
            assert status["messages.out"] == BROWSERS * POSTS
            workers = status["workers"]
            assert [worker["index"] for worker in workers] == [0, 1]
            assert {worker["pid"] for worker in workers} == children_of(node.pid)
            assert all(worker["state"] == "serving" for worker in workers)
            assert all(worker["messages_in"] == POSTS for worker in workers)
            assert sum(worker["messages_out"] for worker in workers) == BROWSERS * POSTS
            assert all(0 < worker["uptime"] <= status["uptime"] + 1000 for worker in workers)

        metrics = await node_metrics(session, node.admin_port)
        per_worker = {str(w["index"]): w["connections"] for w in workers}
        for index, connections in per_worker.items():
            assert metrics[f'relay_worker_browser_connections{{"worker":"{index}"}}'] == connections
        assert metrics["relay_browser_connections{}"] == BROWSERS
        assert metrics['relay_messages_out_total{"instance":"default"}'] == BROWSERS * POSTS
        assert metrics['relay_messages_in_total{"instance":"default"}'] == POSTS
        # Each POST's latency is timed once, on the worker that took it.
        assert metrics["relay_delivery_latency_seconds_count{}"] == POSTS
        assert metrics["relay_workers{}"] == 2
        assert metrics["relay_workers_answering{}"] == 2
        for browser in browsers:
            await browser.close()


async def test_a_stopped_worker_is_listed_as_not_answering_and_the_page_still_comes(
    relays: Relays, redis_server: RedisServer
) -> None:
    [node] = await relays.broker(1, redis_server.url, workers=2).start()
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=3)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        before = (await node_status(session, node.admin_port))["workers"]
        stopped = before[1]["pid"]
        os.kill(stopped, signal.SIGSTOP)
        try:
            # Before the supervisor's watchdog replaces it (10 s): asked one at a
            # time, each request the kernel handed to it cost 3 s, and four in a
            # row (1 in 16) outlasted the watchdog.
            async with asyncio.timeout(WORKER_WATCHDOG - 2):
                status = await _answer_from_either(session, node.admin_port)
            assert status["workers"][1] == {"index": 1, "state": "not answering"}
            assert status["workers"][0]["state"] == "serving"
            assert status["workers"][0]["pid"] == before[0]["pid"]
        finally:
            os.kill(stopped, signal.SIGCONT)


async def test_the_status_page_of_either_worker_shows_the_whole_node(
    relays: Relays, redis_server: RedisServer
) -> None:
    cluster = relays.broker(1, redis_server.url, workers=2, dashboard={"interval_seconds": 0.2})
    [node] = await cluster.start()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        # A page on each worker: the node-status messages come from the worker
        # the page's WebSocket landed on.
        pages: dict[str, Browser] = {}
        others: list[Browser] = []
        async with asyncio.timeout(WAIT):
            while len(pages) < 2:
                browser = await Browser.open(node.client_port)
                await browser.subscribe("relay.node")
                fingerprint = (await browser.recv())["data"]["fingerprint"]
                if fingerprint in pages:
                    others.append(browser)
                else:
                    pages[fingerprint] = browser
        for n in range(POSTS):
            body = orjson.dumps(notification(KEY, unique_id=f"post-{n}"))
            async with session.post(f"http://127.0.0.1:{node.admin_port}/", data=body) as reply:
                assert reply.status == 200
        browsers = 2 + len(others)
        for page in pages.values():
            async with asyncio.timeout(WAIT):
                while True:
                    data = (await page.recv())["data"]
                    if data["messages_in"] == POSTS:
                        break
            assert data["connections"] == browsers
        for browser in [*pages.values(), *others]:
            await browser.close()


async def test_the_latency_chart_of_either_worker_counts_the_posts_every_worker_took(
    relays: Relays, redis_server: RedisServer
) -> None:
    cluster = relays.broker(1, redis_server.url, workers=2, dashboard={"interval_seconds": 0.2})
    [node] = await cluster.start()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        # A page on each worker, each also a browser of the posts: a post then
        # reaches a browser whichever worker takes it, so its latency is charted.
        pages: dict[str, Browser] = {}
        others: list[Browser] = []
        async with asyncio.timeout(WAIT):
            while len(pages) < 2:
                browser = await Browser.open(node.client_port)
                await browser.subscribe("relay.node", KEY)
                fingerprint = (await browser.recv())["data"]["fingerprint"]
                if fingerprint in pages:
                    others.append(browser)
                else:
                    pages[fingerprint] = browser
        for browser in others:
            await browser.close()
        answered_by = set()
        for n in range(POSTS):
            body = orjson.dumps(notification(KEY, unique_id=f"post-{n}"))
            async with session.post(f"http://127.0.0.1:{node.admin_port}/", data=body) as reply:
                assert reply.status == 200
                answered_by.add((await reply.json())["fingerprint"])
        assert len(answered_by) == 2, "the posts did not reach both workers"

        for page in pages.values():
            charted = 0
            samples_after = 0
            # Every post once; then a few more samples, in which a post counted
            # twice (a sibling's slot taken again) would show.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WAIT):
                    while samples_after < 5:
                        data = (await page.recv()).get("data") or {}
                        if "sample" not in data:
                            continue  # a post
                        charted += data["sample"]["latency_count"]
                        if charted >= POSTS:
                            samples_after += 1
            assert (charted, samples_after) == (POSTS, 5), "posts charted, samples after"
        for page in pages.values():
            await page.close()
