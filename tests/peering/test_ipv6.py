"""Peers at IPv6 addresses: nodes peered over ``::1`` deliver to each other, and say where."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.support import WAIT, Admin, Browser, Cluster, eventually, notification

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, 2, host="::1")
    yield cluster
    cluster.stop_all()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_two_nodes_peered_over_ipv6_loopback_deliver_to_each_other(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    await asyncio.to_thread(cluster.start_all)
    admins = [Admin(session, port, host="::1") for port in cluster.admin_ports]
    browsers = [await Browser.open(port, host="::1") for port in cluster.client_ports]
    for browser in browsers:
        await browser.subscribe("PHID-SIX")
    for index, admin in enumerate(admins):
        code, _ = await admin.post(notification("PHID-SIX", unique_id=f"six-{index}"))
        assert code == 200
    seen: list[list[str]] = [[], []]

    async def both_have_both() -> bool:
        for index, browser in enumerate(browsers):
            seen[index] += [message["uniqueID"] for message in await browser.drain()]
        return all(len(got) >= 2 for got in seen)

    await eventually(both_have_both, "each browser got the post made at the other node")
    assert [sorted(got) for got in seen] == [["six-0", "six-1"], ["six-0", "six-1"]]
    for index, admin in enumerate(admins):
        links = (await admin.status())["cluster"]
        assert [(link["host"], link["port"]) for link in links] == [
            ("::1", port) for port in cluster.admin_ports
        ]
        other = links[1 - index]
        assert (other["self"], other["state"], other["last_error"]) == (False, "up", None)
        assert links[index]["self"] is True
        async with session.get(admin.base + "/metrics") as response:
            metrics = await response.text()
        peer = f"http://[::1]:{cluster.admin_ports[1 - index]}"
        assert f'relay_peer_up{{peer="{peer}"}} 1.0' in metrics
    for browser in browsers:
        await browser.close()

    for index, node in enumerate(cluster.nodes):
        assert node is not None
        node.signal(signal.SIGTERM)
        _, log = await asyncio.to_thread(node.wait)
        admin_port, client_port = cluster.admin_ports[index], cluster.client_ports[index]
        assert f"admin listener ready on http://[::1]:{admin_port}\n" in log
        assert f"client listener ready on ws://[::1]:{client_port}\n" in log
        other = cluster.admin_ports[1 - index]
        assert f"peer cluster[{1 - index}] (http://[::1]:{other}) is up" in log, log


async def test_relay_status_and_notify_reach_a_node_on_ipv6_by_url_and_by_config(
    cluster: Cluster,
) -> None:
    node = await asyncio.to_thread(cluster.start, 0)
    url = f"http://[::1]:{cluster.admin_ports[0]}"
    sent = await asyncio.to_thread(_relay, "notify", "-u", url, "-k", "PHID-SIX")
    assert sent.returncode == 0, sent.stderr

    async def links_known() -> bool:
        # By the config: its admin listener is on ::1, so that is where status calls.
        status = await asyncio.to_thread(_relay, "status", "--config", str(node.config_path), "-j")
        assert status.returncode == 0, status.stderr
        links = orjson.loads(status.stdout)["cluster"]
        return bool(links[0]["self"] and links[1]["state"] == "down")

    await eventually(links_known, "the node knows itself and finds its peer down")
    table = await asyncio.to_thread(_relay, "status", "-u", url)
    assert table.returncode == 0, table.stderr
    rows = table.stdout.splitlines()
    peer_rows = rows[rows.index("Cluster peers") + 2 :]
    assert [row.split()[:2] for row in peer_rows] == [
        [f"http://[::1]:{cluster.admin_ports[0]}", "this"],
        [f"http://[::1]:{cluster.admin_ports[1]}", "down"],
    ]


def _relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args], capture_output=True, text=True, timeout=WAIT
    )
