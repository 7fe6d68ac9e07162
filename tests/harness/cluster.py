"""Clusters of relay processes in mesh or broker mode, and the test's record of every node.

See the package docstring for a walk-through.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import aiohttp

from tests.harness.node import START_WAIT, RelayNode, held_port, hold_port
from tests.support import WAIT, Admin, Browser, local_config

Mode = Literal["mesh", "broker"]
#: How much of each node's log a failed test's report shows (the whole file stays on disk).
REPORT_LINES = 80


def peer_entry(port: int, host: str = "127.0.0.1", protocol: str = "http") -> dict[str, Any]:
    """One entry of a config's ``cluster`` list: the admin port of a peer."""
    return {"host": host, "port": port, "protocol": protocol}


class Cluster:
    """Relay nodes started and stopped together; ``cluster[i]`` is node ``i``.

    Made (not started) by :meth:`Relays.mesh` or :meth:`Relays.broker`; each
    node's :attr:`RelayNode.config` may be edited until :meth:`start`.
    """

    def __init__(self, mode: Mode, nodes: list[RelayNode]) -> None:
        """Group ``nodes``, configured for ``mode``."""
        self.mode = mode
        self.nodes = nodes

    def __getitem__(self, index: int) -> RelayNode:
        """Node ``index``."""
        return self.nodes[index]

    def __iter__(self) -> Iterator[RelayNode]:
        """The nodes in order (``[node] = await relays.broker(1, url).start()``)."""
        return iter(self.nodes)

    def __len__(self) -> int:
        """How many nodes there are."""
        return len(self.nodes)

    @property
    def client_ports(self) -> list[int]:
        """Each node's client port, in node order."""
        return [node.client_port for node in self.nodes]

    @property
    def admin_ports(self) -> list[int]:
        """Each node's admin port, in node order."""
        return [node.admin_port for node in self.nodes]

    def admins(self, session: aiohttp.ClientSession) -> list[Admin]:
        """An application server for each node, posting with ``session``."""
        return [node.admin(session) for node in self.nodes]

    async def browsers(self, *keys: str, path: str = "/") -> list[Browser]:
        """A browser on each node, subscribed to ``keys``; the test closes them."""
        return [await node.browser(*keys, path=path) for node in self.nodes]

    def start_blocking(self, *indices: int) -> Cluster:
        """Start the nodes ``indices`` (default: all) and wait until each is ready.

        They start side by side; each has ``START_WAIT`` seconds from its own
        start. A node started before starts again on the ports it had.

        Raises:
            AssertionError: a node exited or did not become ready; the message
                ends with its log. Nodes already started keep running until
                the ``relays`` fixture stops them.
        """
        chosen = [self.nodes[i] for i in indices] if indices else self.nodes
        deadlines = []
        for node in chosen:
            node.spawn()
            deadlines.append(time.monotonic() + START_WAIT)
        for node, deadline in zip(chosen, deadlines, strict=True):
            node.await_ready(deadline)
        return self

    async def start(self, *indices: int) -> Cluster:
        """:meth:`start_blocking` in a thread, so the test's event loop runs on meanwhile."""
        return await asyncio.to_thread(self.start_blocking, *indices)


class Relays:
    """Every relay process of one test; the ``relays`` fixture stops them all at its end."""

    def __init__(self, directory: Path) -> None:
        """Keep each node's config, notify socket and logs below ``directory``."""
        self.directory = directory
        self.clusters: list[Cluster] = []
        self._holds: list[socket.socket] = []

    @property
    def nodes(self) -> list[RelayNode]:
        """Every node of every cluster, in the order they were made."""
        return [node for cluster in self.clusters for node in cluster]

    def mesh(
        self,
        size: int,
        *,
        peers: Sequence[Mapping[str, Any]] = (),
        host: str = "127.0.0.1",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        **sections: Any,
    ) -> Cluster:
        """``size`` nodes each listing every node (itself included), then ``peers``, as peers.

        Every node's admin port is picked now (peer lists name it) and held
        until the node binds it; client ports are 0 until the node starts.
        ``sections`` are top-level config sections (``peering={...}``, ...).
        """
        if "cluster" in sections:
            raise TypeError("mesh() writes each node's cluster list: give extra peers as peers=")
        nodes = self._nodes(size, host, None, args, env, sections)
        ports = [node.hold_admin_port() for node in nodes]
        for node in nodes:
            node.config["cluster"] = [peer_entry(port, host) for port in ports]
            node.config["cluster"] += [dict(peer) for peer in peers]
        return self._add(Cluster("mesh", nodes))

    def broker(
        self,
        size: int,
        broker: str | Mapping[str, Any],
        *,
        workers: int | None = None,
        host: str = "127.0.0.1",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        **sections: Any,
    ) -> Cluster:
        """``size`` nodes meeting in Redis, each with ``workers`` worker processes (if given).

        ``broker`` is the Redis URL, or the whole ``broker`` section
        (``{"url": ..., "ping_interval_seconds": ...}``). Every port is 0
        until the node starts. ``sections`` are other top-level sections
        (a ``cluster`` list too: broker-mode nodes may still have peers).
        """
        section = {"url": broker} if isinstance(broker, str) else dict(broker)
        nodes = self._nodes(size, host, workers, args, env, {**sections, "broker": section})
        return self._add(Cluster("broker", nodes))

    def unused_port(self, host: str = "127.0.0.1") -> int:
        """A port no one listens on until the test ends: a peer that is down, refusing."""
        sock = hold_port(host)
        self._holds.append(sock)
        return held_port(sock)

    def _nodes(
        self,
        size: int,
        host: str,
        workers: int | None,
        args: Sequence[str],
        env: Mapping[str, str] | None,
        sections: Mapping[str, Any],
    ) -> list[RelayNode]:
        where = self.directory / f"cluster{len(self.clusters)}"
        # The first cluster's nodes are plain node0, node1...: most tests have one.
        prefix = f"cluster{len(self.clusters)}." if self.clusters else ""
        nodes = []
        for index in range(size):
            config = local_config(**copy.deepcopy(dict(sections)))  # each node's own to edit
            for server in config["servers"]:
                server["listen"] = host
            node = RelayNode(
                f"{prefix}node{index}",
                where / f"node{index}",
                config,
                host=host,
                workers=workers,
                args=args,
                env=env,
            )
            nodes.append(node)
        return nodes

    def _add(self, cluster: Cluster) -> Cluster:
        self.clusters.append(cluster)
        return cluster

    def report(self) -> str:
        """The end of every log of every node, for a failed test's report."""
        parts = []
        for node in self.nodes:
            if node.proc is None:
                continue
            state = "running" if node.running else f"exited with {node.proc.returncode}"
            for run, path in enumerate(node.log_paths, start=1):
                latest = run == len(node.log_paths)
                about = f"pid {node.pid}, {state}" if latest else "an earlier run"
                parts.append(f"--- {node.name} ({about}): {path} ---")
                parts += path.read_text(errors="replace").splitlines()[-REPORT_LINES:]
        return "\n".join(parts)

    def stop_all(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL for what remains) and free what they held.

        A graceful stop, as systemd's, lets each node (and its workers) write
        its coverage data; all are told at once, so they stop side by side.
        """
        running = [node for node in self.nodes if node.running]
        for node in running:
            node.signal(signal.SIGTERM)
        deadline = time.monotonic() + 2 * WAIT
        for node in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(max(0.0, deadline - time.monotonic()))
        for node in self.nodes:
            node.close()
        for sock in self._holds:
            sock.close()
        self._holds.clear()
