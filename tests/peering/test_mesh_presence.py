"""Presence in mesh mode with real relay processes: every node lists the mesh, a killed one goes.

Three mesh nodes announce themselves to one another over their peer links
(``POST /peer/presence``); each lists all three on ``/status/`` and in
``relay status --cluster``; a node killed with SIGKILL turns stale, then
gone, on the others within the documented bounds, judged on their clocks.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest

from relay.links.presence import GONE_AFTER, STALE_AFTER
from tests.cluster_status.webhook import Receiver, metric, signed_alerts
from tests.harness import Relays
from tests.support import WAIT, Admin, eventually, notification

pytestmark = pytest.mark.slow

INTERVAL = 0.5
#: What a loaded test machine may add to a bound: a poll, a slow event loop.
SLACK = 1.0
SECRET = "mesh-S3CRET-4d1e"


async def members(admin: Admin) -> list[dict[str, Any]]:
    return list((await admin.status())["nodes"]["members"])


async def fresh_rows(admin_url: str) -> list[str]:
    """The fresh rows of ``relay status --cluster`` asked of ``admin_url``."""
    table = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "relay", "status", "-u", admin_url, "--cluster"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("Cluster of mesh peers")
    return [line for line in table.stdout.splitlines() if " fresh " in line]


async def watch_going(admins: list[Admin], pid: int) -> tuple[dict[str, float], float]:
    """Watch the node ``pid``, just killed, go: when each state was first seen, and gone."""
    killed_at = time.monotonic()
    seen: dict[str, float] = {}

    async def killed_node_gone() -> bool:
        states = set()
        for admin in admins:
            states |= {m["state"] for m in await members(admin) if m["pid"] == pid}
        for state in states:
            seen.setdefault(state, time.monotonic() - killed_at)
        return not states

    await eventually(killed_node_gone, "the killed node is gone from the others' lists")
    return seen, time.monotonic() - killed_at


async def test_three_mesh_nodes_list_one_another_then_a_killed_one_goes(
    relays: Relays, session: aiohttp.ClientSession
) -> None:
    cluster = await relays.mesh(3, peering={"presence_interval_seconds": INTERVAL}).start()
    admins = cluster.admins(session)
    browsers = [await node.browser("PHID-MESH") for node in cluster]
    browsers.append(await cluster[1].browser("PHID-MESH"))
    pids = {node.pid for node in cluster}

    async def everyone_lists_everyone() -> bool:
        for admin in admins:
            listed = await members(admin)
            if len(listed) != 3 or any(m["state"] != "fresh" for m in listed):
                return False
            # Each node's own cluster entry learns it is itself from its own answer.
            if any(m["peers"] != 2 for m in listed):
                return False
        counted: int = sum(m["browsers"] for m in await members(admins[0]))
        return counted == len(browsers)

    await eventually(everyone_lists_everyone, "each node lists three fresh nodes and the browsers")
    for index, admin in enumerate(admins):
        nodes = (await admin.status())["nodes"]
        assert nodes["prefix"] is None
        assert {m["pid"] for m in nodes["members"]} == pids
        [own] = [m for m in nodes["members"] if m["self"]]
        assert own["pid"] == cluster[index].pid
        assert own["address"].endswith(f":{cluster[index].admin_port}")
        assert (nodes["joined"], nodes["left"]) == ([], [])
        assert nodes["totals"]["nodes"] == 3

    rows = await fresh_rows(cluster[2].admin_url)
    assert len(rows) == 3, rows
    assert all(any(f":{pid} " in row for pid in pids) for row in rows)

    killed = cluster[2].pid
    await browsers[2].close()
    cluster[2].kill()
    seen, gone_after = await watch_going(admins[:2], killed)
    for node in cluster.nodes[:2]:
        await asyncio.to_thread(node.wait_for_log, r"presence: 2 other nodes in the mesh: ")
        await asyncio.to_thread(node.wait_for_log, rf"presence: node \S+:{killed} left the mesh")
    assert "stale" in seen, seen
    # Its last announcement arrived at most one interval before the kill.
    assert seen["stale"] <= STALE_AFTER * INTERVAL + SLACK
    assert (STALE_AFTER - 1) * INTERVAL - SLACK <= gone_after <= GONE_AFTER * INTERVAL + SLACK
    for admin in admins[:2]:
        nodes = (await admin.status())["nodes"]
        assert len(nodes["members"]) == 2
        assert nodes["left"] == [f"{socket.gethostname()}:{cluster[2].admin_port}"]
    for browser in browsers:
        await browser.close()


async def test_a_presence_record_needs_the_shared_secret_and_a_record(
    relays: Relays, session: aiohttp.ClientSession, tmp_path: Any
) -> None:
    secret_file = tmp_path / "admin.secret"
    secret_file.write_text(SECRET + "\n")
    cluster = await relays.mesh(
        2,
        peering={"presence_interval_seconds": INTERVAL},
        admin={"secret_file": str(secret_file)},
    ).start()
    admins = cluster.admins(session)

    async def both_listed() -> bool:
        return [len(await members(admin)) for admin in admins] == [2, 2]

    await eventually(both_listed, "peers with the secret announce to each other")
    url = cluster[0].admin_url + "/peer/presence"
    async with session.post(url, data=b"{}") as response:
        assert response.status == 401
    bearer = {"Authorization": f"Bearer {SECRET}"}
    async with session.post(url, data=b'{"format": 1}', headers=bearer) as response:
        assert response.status == 400
        assert "not a presence record" in (await response.json())["error"]
    assert len(await members(admins[0])) == 2  # and it still serves
    for node in cluster:
        assert SECRET not in node.log


async def test_in_a_mesh_one_node_alerts_that_a_killed_node_left_and_that_it_came_back(
    relays: Relays, session: aiohttp.ClientSession, receiver: Receiver, tmp_path: Any
) -> None:
    """The oldest node sends the mesh's alerts: kill it, and the next oldest takes over."""
    secret_file = tmp_path / "alerts.secret"
    secret_file.write_text(SECRET + "\n")
    cluster = await relays.mesh(
        3,
        # Links retry often: a link down is up again soon after its peer is.
        peering={"presence_interval_seconds": INTERVAL, "backoff_max_seconds": 0.3},
        alerts={"url": receiver.url, "secret_file": str(secret_file), "interval_seconds": 0.1},
    ).start()
    admins = cluster.admins(session)

    async def everyone_listed() -> bool:
        return [len(await members(admin)) for admin in admins] == [3, 3, 3]

    await eventually(everyone_listed, "each node lists three nodes")
    # The sender is the oldest (then the smallest place): the one whose death is the hard case.
    by_age = sorted(await members(admins[0]), key=lambda m: (m["started_at"], m["place"]))
    index = {node.pid: at for at, node in enumerate(cluster)}
    sender, successor = (cluster[index[m["pid"]]] for m in by_age[:2])
    successor_fingerprint = by_age[1]["fingerprint"]
    killed = cluster.nodes.index(sender)
    place = f"{socket.gethostname()}:{sender.admin_port}"
    sent_before = await metric(session, sender, "relay_alerts_sent_total")
    sender.kill()

    def left() -> list[dict[str, Any]]:
        return signed_alerts(receiver, SECRET, "node-left")

    async def alerted(count: int) -> bool:
        return len(left()) >= count

    await eventually(lambda: alerted(1), "the successor alerts that the sender left")
    # A link is seen down when it carries a message: one posted to each node that remains.
    survivors = [node for node in cluster if node is not sender]
    for at, node in enumerate(survivors):
        admin = Admin(session, node.admin_port)
        await admin.post(notification("PHID-MESH", unique_id=f"after-kill-{at}"))

    def links() -> list[tuple[str, str, str]]:
        found = signed_alerts(receiver, SECRET, "peer-down")
        return [(a["state"], a["subject"], a["node"]) for a in found]

    async def links_down(count: int) -> bool:
        return len(links()) >= count

    await eventually(lambda: links_down(2), "each remaining node alerts its link down")
    await cluster.start(killed)
    await eventually(lambda: alerted(2), "it alerts its return")
    await eventually(lambda: links_down(4), "each link is alerted up again")

    async def counted() -> bool:
        values = [await metric(session, node, "relay_alerts_sent_total") for node in cluster]
        return sent_before + sum(values) == len(receiver.alerts)

    # Every node looks every 0.1 s and sees a node go within a few ms of the others.
    await eventually(counted, "every alert sent is counted in /metrics")
    alerts = left()
    assert [(a["state"], a["subject"], a["node"]) for a in alerts] == [
        ("firing", place, successor_fingerprint),
        ("resolved", place, successor_fingerprint),
    ]
    assert alerts[0]["since"] == alerts[1]["since"]
    warned = [node for node in cluster if f"alert firing: node {place} left" in node.log]
    assert warned == [successor]
    # A peer link is seen from its ends only: each node tells of its own link, once an episode.
    link = f"127.0.0.1:{sender.admin_port}"
    fingerprints = [m["fingerprint"] for m in by_age[1:]]
    expected = [(state, link, at) for state in ("firing", "resolved") for at in fingerprints]
    assert sorted(links()) == sorted(expected)
    assert all(SECRET not in node.log for node in cluster)
