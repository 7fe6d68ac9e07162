"""Peers at IPv6 addresses: nodes peered over ``::1`` deliver to each other, and say where."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from tests.harness import Relays
from tests.support import WAIT, eventually, notification

pytestmark = pytest.mark.slow


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_two_nodes_peered_over_ipv6_loopback_deliver_to_each_other(
    relays: Relays, session: aiohttp.ClientSession
) -> None:
    cluster = await relays.mesh(2, host="::1").start()
    admin_ports = [node.admin_port for node in cluster]
    admins = cluster.admins(session)
    browsers = await cluster.browsers("PHID-SIX")
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
            ("::1", port) for port in admin_ports
        ]
        other = links[1 - index]
        assert (other["self"], other["state"], other["last_error"]) == (False, "up", None)
        assert links[index]["self"] is True
        async with session.get(admin.base + "/metrics") as response:
            metrics = await response.text()
        peer = f"http://[::1]:{admin_ports[1 - index]}"
        assert f'relay_peer_up{{peer="{peer}"}} 1.0' in metrics
    for browser in browsers:
        await browser.close()

    for index, node in enumerate(cluster):
        node.signal(signal.SIGTERM)
        assert await asyncio.to_thread(node.wait) == 0
        log = node.log
        admin_port, client_port = node.admin_port, node.client_port
        assert f"admin listener ready on http://[::1]:{admin_port}\n" in log
        assert f"client listener ready on ws://[::1]:{client_port}\n" in log
        other = admin_ports[1 - index]
        assert f"peer cluster[{1 - index}] (http://[::1]:{other}) is up" in log, log


async def test_relay_status_and_notify_reach_a_node_on_ipv6_by_url_and_by_config(
    relays: Relays,
) -> None:
    cluster = relays.mesh(2, host="::1")
    await cluster.start(0)
    node, peer_port = cluster[0], cluster[1].config["servers"][1]["port"]
    url = f"http://[::1]:{node.admin_port}"
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
        [f"http://[::1]:{node.admin_port}", "this"],
        [f"http://[::1]:{peer_port}", "down"],
    ]


def _relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args], capture_output=True, text=True, timeout=WAIT
    )
