"""The old process of a handoff exits promptly once its last browser moved.

Idle connections to the admin port (an application server's pool, opened
ahead and not used yet) used to keep it up to ``admin_header_seconds`` in
the closing of its admin listener, waiting for a request that was not on
its way: a bench run saw ~3 s between the successor's admin listener and the
old process' ``handoff done``. Then it closed them unanswered, and a client
that connected and only then (a second later: a paused process) sent its
post lost it. Now the old process passes them to its successor, which
answers what comes on them.
"""

from __future__ import annotations

import asyncio
import re
import socket
from datetime import datetime
from pathlib import Path

import pytest

from relay.links.fdstore_wire import FDS_PER_MESSAGE
from tests.harness.cluster import Cluster, Relays
from tests.harness.node import RelayNode
from tests.node.handoff_parts import Poster, close_all, connect_many, post_over
from tests.support import local_config

#: Long, so that waiting for the idle connections would show.
HEADER_SECONDS = 30.0
#: Application servers' pools, opened ahead: more than one message of the
#: handoff can carry (Linux passes at most 253 descriptors at once).
IDLE = FDS_PER_MESSAGE + 10


def _node(relays: Relays, tmp_path: Path, name: str, *args: str) -> RelayNode:
    config = local_config(
        limits={"max_connections_per_ip": 0, "admin_header_seconds": HEADER_SECONDS}
    )
    node = RelayNode(name, tmp_path / name, config, host="127.0.0.1", args=args)
    relays.clusters.append(Cluster("mesh", [node]))  # stopped at the end of the test
    return node


def _logged_at(log: str, text: str) -> datetime:
    line = next(line for line in log.splitlines() if text in line)
    stamp = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", line)
    assert stamp is not None, line
    return datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f")


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_idle_admin_connections_do_not_keep_the_old_process(
    relays: Relays, tmp_path: Path
) -> None:
    handoff = str(tmp_path / "handoff.sock")
    old = _node(relays, tmp_path, "old", "--handoff-socket", handoff).start()
    watchers = await connect_many(old.client_port, 20)
    # An application server's pool: connected, no request sent yet.
    idle = [socket.create_connection(("127.0.0.1", old.admin_port)) for _ in range(IDLE)]
    poster = Poster(old.admin_port)  # posts in flight throughout, each on a new connection
    try:
        new = _node(relays, tmp_path, "new", "--handoff-socket", handoff, "--take-over")
        await asyncio.to_thread(new.start)
        assert await asyncio.to_thread(old.wait) == 0
        took = _logged_at(old.log, "handoff done") - _logged_at(old.log, "handing over to relay")
        # Bounded well below HEADER_SECONDS: the idle connections were not waited for.
        assert took.total_seconds() < HEADER_SECONDS / 3
        # The pool's, and any of the poster's connected but not written to yet.
        passed = re.search(r"(\d+) admin connections with no request yet passed on", old.log)
        assert passed is not None
        assert int(passed.group(1)) >= len(idle)
        await poster.stop()
        assert not poster.failures  # the posts on their way were answered, by one or the other
        # The pool's connections, opened before the handoff, are used only now: the
        # successor answers on them.
        late = [f"pooled{number}" for number in range(len(idle))]
        for sock, unique_id in zip(idle, late, strict=True):
            assert await asyncio.to_thread(post_over, sock, unique_id) == 200
        for watcher in watchers:
            await watcher.sync()
            assert watcher.ended is None
            assert watcher.ids == poster.posted + late
    finally:
        for sock in idle:
            sock.close()
    await close_all(watchers)
