"""Handing a broker-mode node to new code: real processes, real sockets, a real redis-server.

As ``test_handoff``, in broker mode: each post goes through Redis, and the
cut between what the old process delivered and what the successor delivers
is a position in the streams. ``RELAY_HANDOFF_BROWSERS`` raises the count.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import websockets

from tests.broker.test_broker_cluster import BROKER_TIMING
from tests.harness.checkout import second_checkout
from tests.harness.cluster import Cluster, Relays
from tests.harness.node import RelayNode
from tests.node.handoff_parts import RATE, Poster, Watcher, close_all, connect_many, read_status
from tests.redis_harness import RedisServer
from tests.support import eventually, local_config

BROWSERS = int(os.environ.get("RELAY_HANDOFF_BROWSERS", "200"))
#: The version string of the new code's checkout.
NEW_VERSION = "0.1.0+broker-handed-over"


def _node(
    relays: Relays,
    redis_url: str,
    tmp_path: Path,
    name: str,
    *args: str,
    env: dict[str, str] | None = None,
) -> RelayNode:
    config = local_config(
        limits={"max_connections_per_ip": 0}, broker={"url": redis_url, **BROKER_TIMING}
    )
    node = RelayNode(name, tmp_path / name, config, host="127.0.0.1", args=args, env=env)
    relays.clusters.append(Cluster("broker", [node]))  # stopped at the end of the test
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
async def test_a_broker_mode_handoff_disconnects_no_one_and_cuts_by_stream_position(
    relays: Relays, redis_server: RedisServer, tmp_path: Path
) -> None:
    handoff = str(tmp_path / "handoff.sock")
    old = _node(relays, redis_server.url, tmp_path, "old", "--handoff-socket", handoff).start()
    watchers = await connect_many(old.client_port, BROWSERS)
    poster = Poster(old.admin_port)
    stop_joining = asyncio.Event()
    refused: list[str] = []
    joining = asyncio.create_task(_newcomers(old.client_port, stop_joining, refused))
    checkout = second_checkout(tmp_path / "checkout", NEW_VERSION)
    new = _node(
        relays, redis_server.url, tmp_path, "new", "--handoff-socket", handoff, "--take-over",
        env=checkout,
    )  # fmt: skip
    await asyncio.to_thread(new.start)
    assert await asyncio.to_thread(old.wait) == 0
    stop_joining.set()
    joined = await joining
    await asyncio.sleep(10 / RATE)  # a few more posts, to the new process alone
    await poster.stop()
    everyone = [*watchers, *joined]
    posted = poster.posted

    # A post is answered once Redis has it; it reaches browsers when Redis returns it.
    async def delivered() -> bool:
        return all(watcher.ids[-1:] == posted[-1:] for watcher in everyone)

    await eventually(delivered, "every browser got the last post")
    for watcher in everyone:
        await watcher.sync()  # anything more (a duplicate) would have come by now
    assert not poster.failures
    assert not refused
    assert "handoff done" in old.log
    assert "reading the broker's streams from where the old process stopped" in new.log
    for watcher in watchers:
        assert watcher.ended is None
        assert watcher.ids == posted
    for watcher in joined:
        assert watcher.ended is None
        assert watcher.ids == posted[len(posted) - len(watcher.ids) :]
    status = await read_status(new.admin_port)
    assert status["clients.active"] == BROWSERS + len(joined)
    assert status["process"]["version"] == NEW_VERSION
    assert status["process"]["pid"] == new.pid
    assert status["broker"]["state"] == "up"
    await close_all(everyone)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_no_handoff_begins_while_redis_is_away(relays: Relays, tmp_path: Path) -> None:
    away = f"redis://127.0.0.1:{relays.unused_port()}/0"  # refused
    handoff = str(tmp_path / "handoff.sock")
    old = _node(relays, away, tmp_path, "old", "--handoff-socket", handoff).start()
    watcher = await Watcher.open(old.client_port)
    new = _node(relays, away, tmp_path, "new", "--handoff-socket", handoff, "--take-over")
    new.spawn()
    assert await asyncio.to_thread(new.wait) == 1
    assert "did not hand over" in new.log
    assert "handoff failed, this process keeps serving: the broker is" in old.log
    await watcher.sync()
    assert watcher.ended is None
    assert (await read_status(old.admin_port))["clients.active"] == 1
    await close_all([watcher])
