"""A peer that resets a kept-alive connection as the next post goes out: it goes again at once.

A node's admin connections are closed when it restarts or hands over to new
code; a peer link that picks such a connection from its pool finds out while
writing the post or reading the answer. Retried later, behind posts sent
meanwhile, the post would reach that node's browsers out of order.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable

import aiohttp
import orjson

from relay.node.node import Node
from tests.support import Admin, eventually, local_config, notification

StartNode = Callable[..., Awaitable[Node]]


class ResettingPeer:
    """A peer's admin port that answers each connection's first post, and resets at the second."""

    def __init__(self) -> None:
        self.taken: list[str] = []
        self.resets = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                if served == 1:
                    # The second post on this connection: gone, with a reset.
                    self.resets += 1
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                self.taken.append(orjson.loads(body)["uniqueID"])
                served += 1
                answer = b'{"fingerprint":"RESETTING-PEER"}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.transport.abort()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_a_post_on_a_connection_the_peer_reset_goes_again_in_its_place(
    start_node: StartNode,
) -> None:
    peer = ResettingPeer()
    port = await peer.start()
    try:
        node = await start_node(
            local_config(cluster=[{"host": "127.0.0.1", "port": port, "protocol": "http"}])
        )
        link = node.peers.links[0]
        async with aiohttp.ClientSession() as session:
            admin = Admin(session, node.admin_addresses[0][1])
            for n in range(4):
                assert (await admin.post(notification("K", unique_id=f"u{n}")))[0] == 200

                async def taken(n: int = n) -> bool:
                    return len(peer.taken) == n + 1

                await eventually(taken, f"the peer took post u{n}")
        assert peer.taken == ["u0", "u1", "u2", "u3"]
        assert peer.resets >= 1
        assert link.reading().failed == 0
    finally:
        await peer.close()
