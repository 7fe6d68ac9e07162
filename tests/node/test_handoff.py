"""Handing a node's listeners and browsers to a new process: real processes, real sockets.

The browsers and the application server are in the test; the old and the new
relay are ``relay serve --handoff-socket`` processes, the new one with
``--take-over``. ``RELAY_HANDOFF_BROWSERS`` raises the count (2,000 once).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from tests.harness.checkout import second_checkout
from tests.harness.cluster import Cluster, Relays
from tests.harness.node import START_WAIT, RelayNode
from tests.node.handoff_parts import RATE, Poster, Watcher, close_all, connect_many
from tests.support import free_ports, local_config

BROWSERS = int(os.environ.get("RELAY_HANDOFF_BROWSERS", "200"))
#: The version string of the new code's checkout.
NEW_VERSION = "0.1.0+handed-over"


def _node(
    relays: Relays, tmp_path: Path, name: str, *args: str, env: dict[str, str] | None = None
) -> RelayNode:
    config = local_config(limits={"max_connections_per_ip": 0})
    node = RelayNode(name, tmp_path / name, config, host="127.0.0.1", args=args, env=env)
    relays.clusters.append(Cluster("mesh", [node]))  # stopped at the end of the test
    return node


async def _newcomers(port: int, stop: asyncio.Event, refused: list[str]) -> list[Watcher]:
    """Browsers connecting through the handoff: none may be refused."""
    joined: list[Watcher] = []
    while not stop.is_set():
        try:
            joined.append(await Watcher.open(port))
        except (OSError, websockets.InvalidStatus) as exc:
            refused.append(str(exc))
        await asyncio.sleep(0.02)  # the pace of new browsers
    return joined


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_handoff_disconnects_no_one(relays: Relays, tmp_path: Path) -> None:
    handoff = str(tmp_path / "handoff.sock")
    old = _node(relays, tmp_path, "old", "--handoff-socket", handoff).start()
    watchers = await connect_many(old.client_port, BROWSERS)
    poster = Poster(old.admin_port)
    stop_joining = asyncio.Event()
    refused: list[str] = []
    joining = asyncio.create_task(_newcomers(old.client_port, stop_joining, refused))
    # The new code: a second checkout, with a version string of its own.
    checkout = second_checkout(tmp_path / "checkout", NEW_VERSION)
    new = _node(relays, tmp_path, "new", "--handoff-socket", handoff, "--take-over", env=checkout)
    await asyncio.to_thread(new.start)
    assert await asyncio.to_thread(old.wait) == 0
    stop_joining.set()
    joined = await joining
    await asyncio.sleep(10 / RATE)  # a few more posts, to the new process alone
    await poster.stop()
    for watcher in [*watchers, *joined]:
        await watcher.sync()
    assert not poster.failures
    assert not refused
    assert new.client_port == old.client_port
    assert new.admin_port == old.admin_port
    assert "handoff done" in old.log
    for watcher in watchers:
        assert watcher.ended is None
        assert watcher.ids == poster.posted
    for watcher in joined:
        assert watcher.ended is None
        # Whatever it got is the tail of the posts, once each, in order.
        assert watcher.ids == poster.posted[len(poster.posted) - len(watcher.ids) :]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{new.admin_port}/status/") as response,
    ):
        status: dict[str, Any] = await response.json()
    assert status["clients.active"] == BROWSERS + len(joined)
    # What the operator checks after the upgrade: the new code runs, and took everyone over.
    moved = int(re.findall(r"handoff done: (\d+) browser connections moved", old.log)[0])
    assert BROWSERS <= moved <= BROWSERS + len(joined)  # newcomers landed on either process
    process = status["process"]
    assert (process["version"], process["pid"], process["adopted"]) == (NEW_VERSION, new.pid, moved)
    started = datetime.fromisoformat(process["started_at"])
    assert started.tzinfo == UTC
    assert abs(started.timestamp() - time.time()) < START_WAIT
    assert f"handing over to relay {NEW_VERSION}" in old.log
    await close_all([*watchers, *joined])


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_successor_whose_config_moved_a_client_listener_hands_nothing_over(
    relays: Relays, tmp_path: Path
) -> None:
    """Matched by position, the old ports would be served and one listener's browsers closed."""
    handoff = str(tmp_path / "handoff.sock")
    old = _node(relays, tmp_path, "old", "--handoff-socket", handoff).start()
    watcher = await Watcher.open(old.client_port)
    moved = local_config(limits={"max_connections_per_ip": 0})
    moved["servers"][0]["port"] = free_ports(1)[0]  # the client listener, on another port
    args = ("--handoff-socket", handoff, "--take-over")
    new = RelayNode("new", tmp_path / "new", moved, host="127.0.0.1", args=args)
    relays.clusters.append(Cluster("mesh", [new]))
    new.spawn()
    assert await asyncio.to_thread(new.wait) == 1
    assert re.search(
        rf"did not hand over: its client listeners \(ports {old.client_port}\) are not this "
        rf"config's \(ports {moved['servers'][0]['port']}\); a change of listeners takes a restart",
        new.log,
    )
    await asyncio.to_thread(old.wait_for_log, "handoff failed, this process keeps serving")
    await watcher.sync()
    assert watcher.ended is None  # nobody was disconnected
    await close_all([watcher])
