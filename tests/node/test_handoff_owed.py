"""Slow readers in a handoff, in process: they move with the bytes relay owes them.

Both sides of the handoff run in the test's event loop (asyncio's and
uvloop), each watching the other's pid through a stand-in. The browser is
a :class:`~tests.node.slow_reader.SlowReader` (a raw socket with a small
receive buffer that reads only when told) behind which relay's transport
holds bytes. Scenarios with real processes: ``test_slow_reader.py``.
"""

from __future__ import annotations

import asyncio
import socket

import orjson

from relay.core.notification import parse_notification
from relay.links.handoff_wire import ConnectionState
from relay.listeners.movable import MovableConnection, adopt
from relay.node.node import Node
from tests.broker.test_broker import StartNode
from tests.support import WAIT, local_config, notification


def _publish(node: Node, ids: list[str], filler: str = "") -> None:
    """Route one message to ``K`` per id, as a post would."""
    for unique in ids:
        raw = orjson.dumps(notification("K", unique_id=unique, filler=filler))
        node.hub.publish("default", parse_notification(raw))


async def test_an_adopted_connection_is_written_what_it_is_owed_before_anything_else(
    start_node: StartNode,
) -> None:
    node = await start_node(local_config(), connection_factory=MovableConnection)
    with socket.create_server(("127.0.0.1", 0)) as server:
        browser = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    with browser:
        # A frame cut after its first bytes by the old process, and one whole: what it owed.
        owed = b"lo, world" + b"\x81\x02hi"
        state = ConnectionState(0, "127.0.0.1", "default", ("K",), False, 0.0, owed=owed)
        await adopt(node.client_listeners[0], state, accepted.detach())
        _publish(node, ["after"])
        expected = len(owed) + 2 + len(orjson.dumps(notification("K", unique_id="after")))
        received = b""
        loop = asyncio.get_running_loop()
        browser.setblocking(False)
        async with asyncio.timeout(WAIT):
            while len(received) < expected:
                received += await loop.sock_recv(browser, 65536)
        assert received.startswith(owed)
        frame = received[len(owed) :]
        assert frame[:1] == b"\x81"  # a text frame follows, whole
        assert orjson.loads(frame[2:])["uniqueID"] == "after"
