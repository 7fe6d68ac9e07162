"""``systemctl restart`` of a mesh node with systemd's file descriptor store: nothing missed.

Two mesh nodes: ``a`` restarted under the fake systemd
(``tests/harness/fdstore.py``) with browsers on it, ``b`` taking the posts
before, during and after ``a``'s gap and routing them to ``a``. Peer
messages reach ``a`` through its admin port only: the stop closes it before
the cut (what is in flight is delivered first), so none arrives between a
browser's cut and the exit; during the gap ``b``'s posts to ``a`` wait in
the stored admin socket's backlog (or in ``b``'s queue for a peer that is
down) and reach the kept browsers from the next process, once, in order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from tests.harness.cluster import Cluster, Relays, peer_entry
from tests.harness.fdstore import FakeSystemd
from tests.harness.node import RelayNode
from tests.node.handoff_parts import Poster, close_all, connect_many
from tests.support import WAIT, eventually, free_ports, local_config

BROWSERS = 20


def _mesh_config(client: int, admin: int, peer_admin: int) -> dict[str, object]:
    return local_config(
        servers=[
            {"type": "client", "port": client, "listen": "127.0.0.1"},
            {"type": "admin", "port": admin, "listen": "127.0.0.1"},
        ],
        limits={"max_connections_per_ip": 0},
        cluster=[peer_entry(peer_admin)],
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_mesh_restart_delivers_every_post_to_the_other_node_once(
    systemd: FakeSystemd, relays: Relays, tmp_path: Path
) -> None:
    a_client, a_admin, b_client, b_admin = free_ports(4)
    path = tmp_path / "a.json"
    path.write_bytes(orjson.dumps(_mesh_config(a_client, a_admin, b_admin)))
    other = RelayNode(
        "b", tmp_path / "b", _mesh_config(b_client, b_admin, a_admin), host="127.0.0.1"
    )
    relays.clusters.append(Cluster("mesh", [other]))  # stopped at the end of the test
    other.start()
    first = systemd.start("--config", str(path))
    await systemd.ready()
    watchers = await connect_many(a_client, BROWSERS)
    poster = Poster(b_admin)  # the application server posts to the other node

    async def posted(count: int) -> bool:
        return len(poster.posted) >= count

    await eventually(lambda: posted(5), "five posts to the other node before the restart")
    first.send_signal(15)
    assert await asyncio.to_thread(first.wait, 2 * WAIT) == 0
    assert systemd.names().count("b") == BROWSERS
    gap_from = len(poster.posted)
    await eventually(lambda: posted(gap_from + 5), "five posts during the gap")
    systemd.start("--config", str(path))
    await systemd.ready()
    after = len(poster.posted)
    await eventually(lambda: posted(after + 5), "five posts after the restart")
    await poster.stop()
    assert not poster.failures
    last = poster.posted[-1]

    async def delivered() -> bool:
        return all(last in watcher.ids for watcher in watchers)

    await eventually(delivered, "every kept browser got the last post")
    for watcher in watchers:
        await watcher.sync()  # anything more (a duplicate) would have come by now
    for watcher in watchers:
        assert watcher.ended is None
        assert watcher.ids == poster.posted  # each once, in order: before, during, after
    assert f"and {BROWSERS} browser connections adopted" in systemd.log()
    await close_all(watchers)
