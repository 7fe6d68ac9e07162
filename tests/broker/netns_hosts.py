"""Broker mode across hosts: Redis in one network namespace, each relay node in another.

The namespaces come from ``tests/peering/namespaces.py``: one per host, all on
one bridge. Cutting a host's link is silent, as a pulled cable or a host that
vanished is: no FIN, no RST, the sockets on either side stay open. The test
reaches each node through sockets it opens inside that node's namespace, so
a cut never hides a node from the test.

Needs root (namespaces and veth pairs); where they cannot be made, the test
fails saying why.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson

from tests.peering.namespaces import Namespaces, node_address
from tests.redis_harness import require_redis_server
from tests.support import WAIT, Browser, RelayProcess

#: Every host has its own ports: the same numbers on each.
REDIS_PORT = 6379
CLIENT_PORT = 22280
ADMIN_PORT = 22281
#: Redis' host; the relay nodes are on the others.
REDIS_HOST = 0
#: A bounded poll's step while Redis starts (it has no event to wait on from outside).
POLL = 0.02


class BrokerHosts:
    """Redis on host 0 and a relay node on every other host of ``namespaces``."""

    def __init__(self, directory: Path, namespaces: Namespaces, broker: dict[str, Any]) -> None:
        """Keep files under ``directory``; every node gets ``broker`` (the URL is added)."""
        self.directory = directory
        self.ns = namespaces
        self.broker = {"url": f"redis://{node_address(REDIS_HOST)}:{REDIS_PORT}/0", **broker}
        self.redis: subprocess.Popen[bytes] | None = None
        self.nodes: dict[int, RelayProcess] = {}

    # Redis.

    def start_redis(self) -> None:
        """Start ``redis-server`` on host 0 (no persistence) and wait until it answers PING."""
        where = self.directory / "redis"
        where.mkdir(parents=True, exist_ok=True)
        command = [
            require_redis_server(),
            *("--bind", node_address(REDIS_HOST), "127.0.0.1", "--port", str(REDIS_PORT)),
            *("--protected-mode", "no", "--save", "", "--appendonly", "no"),
            *("--dir", str(where), "--logfile", str(where / "redis.log")),
        ]
        self.redis = subprocess.Popen(
            self.ns.command(REDIS_HOST, command),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + WAIT
        while not self._answers():
            if time.monotonic() > deadline or self.redis.poll() is not None:
                raise AssertionError(f"redis-server did not start: see {where / 'redis.log'}")
            time.sleep(POLL)  # a bounded poll: nothing tells the test it listens

    def pause_redis(self) -> None:
        """Stop Redis (SIGSTOP): its host's kernel still accepts connections, Redis answers none."""
        assert self.redis is not None
        self.redis.send_signal(signal.SIGSTOP)

    def resume_redis(self) -> None:
        """Let a paused Redis run again (SIGCONT)."""
        assert self.redis is not None
        self.redis.send_signal(signal.SIGCONT)

    def forget_connections(self) -> None:
        """Have Redis' host forget every connection to Redis, telling no client (``ss -K``).

        Call with its link cut: the resets its kernel sends die on the dead
        link, so each client keeps a connection Redis no longer has, as after
        a reboot of Redis' host, or a NAT or firewall between them that
        dropped the connection's state. A client learns of it only by sending.
        """
        # With its own end of the link down too, Redis' host has no route for
        # the resets: with only the switch's end down, they reached the
        # clients once the link was back (seen while writing this test).
        for command in (
            ["ip", "link", "set", "eth0", "down"],
            ["ss", "-K", "-t", "state", "established", f"( sport = :{REDIS_PORT} )"],
            ["ip", "link", "set", "eth0", "up"],
        ):
            subprocess.run(
                self.ns.command(REDIS_HOST, command), capture_output=True, timeout=WAIT, check=True
            )

    def _answers(self) -> bool:
        try:
            sock = self.ns.connect(REDIS_HOST, REDIS_PORT)
        except OSError:
            return False
        with sock:
            sock.setblocking(True)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    # Relay nodes.

    def start_node(self, index: int) -> RelayProcess:
        """Start a relay node on host ``index`` and wait until it listens."""
        config = {
            "servers": [
                {"type": "client", "port": CLIENT_PORT, "listen": "0.0.0.0"},
                {"type": "admin", "port": ADMIN_PORT, "listen": "0.0.0.0"},
            ],
            "broker": self.broker,
        }
        path = self.directory / f"node{index}.json"
        path.write_bytes(orjson.dumps(config))
        node = RelayProcess(path)
        node.args = self.ns.command(index, node.args)
        node.start()
        node.follow_log()
        self.nodes[index] = node
        return node

    async def post(self, index: int, body: dict[str, Any]) -> tuple[int, Any]:
        """POST ``body`` to node ``index``'s admin port: the status and the decoded answer."""
        return await self.ns.request(index, ADMIN_PORT, "POST", "/", orjson.dumps(body))

    async def status(self, index: int) -> dict[str, Any]:
        """Node ``index``'s ``/status/``."""
        status, body = await self.ns.request(index, ADMIN_PORT, "GET", "/status/")
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    async def browser(self, index: int, *keys: str) -> Browser:
        """A browser on node ``index``, subscribed to ``keys``; the test closes it."""
        return await self.ns.browser(index, CLIENT_PORT, *keys)

    def close(self) -> str:
        """Stop every node (SIGTERM, then SIGKILL) and Redis; return the nodes' logs."""
        logs = []
        for index, node in self.nodes.items():
            if node.proc is not None and node.proc.poll() is None:
                node.signal(signal.SIGTERM)
            try:
                node.wait()
            except subprocess.TimeoutExpired:
                node.kill()
            logs.append(f"--- node on host {index} ---\n" + "".join(node.output))
        if self.redis is not None:
            self.resume_redis()  # a stopped process dies of SIGKILL too, but reads no more
            self.redis.kill()
            self.redis.wait(WAIT)
        return "\n".join(logs)
