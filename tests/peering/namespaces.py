"""Network namespaces for the mesh tests: one per node and a bridge, made and removed here.

Every node gets a namespace with a veth pair to a bridge in a "switch"
namespace, and an address in 198.18.0.0/15 (the range reserved for benchmark
networks). Nothing is added to the host's own namespace: the test talks to a
node through sockets it opens *inside* that node's namespace, to 127.0.0.1,
so that cutting a node's link never cuts the test's view of it.

Python 3.11 has no ``os.setns``, so sockets are opened after ``setns(2)``
through ctypes, on the calling thread only, and the thread switches back at once
(``Namespaces.entered`` keeps it there for a block).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from tests.support import WAIT, Browser

CLONE_NEWNET = 0x40000000
#: The nodes' subnet, inside their own namespaces (so runs never collide).
SUBNET = "198.18.0"
_runs = itertools.count()
#: A locally administered hardware address no interface here has (see ``Namespaces.sever``).
NOWHERE = "02:00:00:00:00:01"
_libc = ctypes.CDLL(None, use_errno=True)


def node_address(index: int) -> str:
    """Node ``index``'s address on the bridge."""
    return f"{SUBNET}.{index + 1}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=WAIT, check=check)


class Namespaces:
    """``size`` node namespaces on one bridge; ``close`` removes everything, always."""

    def __init__(self, size: int) -> None:
        """Build the namespaces, or fail the test saying why they cannot be built."""
        missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
        if missing:
            pytest.fail(
                f"the network tests need {' and '.join(missing)} (Debian package iproute2; "
                "scripts/ensure-services installs it as root)"
            )
        _remove_leftovers()
        run = f"relay{os.getpid()}-{next(_runs)}"
        self.switch = f"{run}-sw"
        self.names = [f"{run}-n{index}" for index in range(size)]
        self._made: list[str] = []
        try:
            self._build()
        except subprocess.CalledProcessError as exc:
            self.close()
            pytest.fail(
                "cannot create network namespaces and veth pairs here (they need root, "
                f"CAP_NET_ADMIN and a kernel with veth and bridge support): "
                f"`{' '.join(exc.cmd)}` said: {exc.stderr.strip()}"
            )

    def _build(self) -> None:
        for name in [self.switch, *self.names]:
            _ip("netns", "add", name, check=True)
            self._made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for index, name in enumerate(self.names):
            port = f"s{index}"
            _ip(
                "-n",
                self.switch,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "eth0",
                "netns",
                name,
            )
            _ip("-n", self.switch, "link", "set", port, "master", "br0")
            _ip("-n", self.switch, "link", "set", port, "up")
            _ip("-n", name, "addr", "add", f"{node_address(index)}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")

    def close(self) -> None:
        """Remove every namespace (their veths and bridge go with them)."""
        for name in reversed(self._made):
            _ip("netns", "del", name, check=False)
        self._made.clear()

    # Faults.

    def cut(self, index: int) -> None:
        """Take node ``index``'s link down: it is partitioned from every other node."""
        _ip("-n", self.switch, "link", "set", f"s{index}", "down")

    def heal(self, index: int) -> None:
        """Bring node ``index``'s link back."""
        _ip("-n", self.switch, "link", "set", f"s{index}", "up")

    def sever(self, first: int, second: int) -> None:
        """Cut the link between two nodes only: each still reaches the others.

        Each is told a hardware address nobody has for the other, so their
        frames go nowhere: a silent cut, as a failed switch port or route makes
        (it needs no tc filter or firewall module, which a kernel may lack).
        """
        for here, there in ((first, second), (second, first)):
            _ip(
                "-n",
                self.names[here],
                "neigh",
                "replace",
                node_address(there),
                "lladdr",
                NOWHERE,
                "dev",
                "eth0",
                "nud",
                "permanent",
            )

    def mend(self, first: int, second: int) -> None:
        """Undo ``sever``: the two find each other's addresses again."""
        for here, there in ((first, second), (second, first)):
            _ip("-n", self.names[here], "neigh", "del", node_address(there), "dev", "eth0")

    def slow(self, index: int, rate: str, burst: str = "16kb", latency: str = "500ms") -> None:
        """Shape what node ``index`` sends to ``rate`` with a token bucket (tc tbf)."""
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.names[index],
                "tc",
                "qdisc",
                "add",
                "dev",
                "eth0",
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                burst,
                "latency",
                latency,
            ],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=True,
        )

    def qdisc(self, index: int) -> str:
        """``tc -s qdisc show`` for node ``index``'s link: what shaping did."""
        return subprocess.run(
            self.command(index, ["tc", "-s", "qdisc", "show", "dev", "eth0"]),
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=True,
        ).stdout

    def command(self, index: int, args: list[str]) -> list[str]:
        """``args`` run inside node ``index``'s namespace (``ip netns exec`` execs: same pid)."""
        return ["ip", "netns", "exec", self.names[index], *args]

    # The test's view of a node: sockets opened inside its namespace.

    @contextlib.contextmanager
    def entered(self, index: int) -> Iterator[None]:
        """Put the calling thread in node ``index``'s namespace until the block ends.

        Every socket the thread opens meanwhile is that node's, and so is
        every process or thread it starts; those opened before stay where
        they are. A test whose own event loop must act as a node (a redis-py
        client in the test process) runs inside this block.
        """
        with open("/proc/thread-self/ns/net") as own, open(f"/run/netns/{self.names[index]}") as ns:
            if _libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                error = ctypes.get_errno()
                raise OSError(error, f"setns into {self.names[index]}: {os.strerror(error)}")
            try:
                yield
            finally:
                if _libc.setns(own.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back to the test's own namespace")

    def connect(self, index: int, port: int) -> socket.socket:
        """A TCP socket connected to 127.0.0.1:``port`` inside node ``index``'s namespace."""
        with self.entered(index):
            sock = socket.socket()
        sock.settimeout(WAIT)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    async def request(
        self, index: int, port: int, method: str, path: str, body: bytes = b""
    ) -> tuple[int, Any]:
        """One HTTP/1.1 request to a node's admin port; the status and the decoded JSON body."""
        reader, writer = await asyncio.open_connection(sock=self.connect(index, port))
        try:
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            async with asyncio.timeout(WAIT):
                response = await reader.read()
        finally:
            writer.close()
        head, _, content = response.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, orjson.loads(content) if content else None

    async def browser(self, index: int, port: int, *keys: str) -> Browser:
        """A browser connected to node ``index``'s client port, subscribed to ``keys``."""
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/", sock=self.connect(index, port), max_size=None
        )
        browser = Browser(ws)
        await browser.subscribe(*keys)
        return browser


def _remove_leftovers() -> None:
    """Remove namespaces a killed test run left behind (its pid is gone); never another's."""
    listed = _ip("netns", "list", check=False).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = re.fullmatch(r"relay(\d+)-\d+-(sw|n\d+)", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _ip("netns", "del", name, check=False)


def tc_supports_tbf(namespaces: Namespaces) -> None:
    """Fail, saying why, when the kernel has no tbf qdisc."""
    probe = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            namespaces.switch,
            "tc",
            "qdisc",
            "add",
            "dev",
            "lo",
            "root",
            "tbf",
            "rate",
            "1mbit",
            "burst",
            "16kb",
            "latency",
            "100ms",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    if probe.returncode:
        pytest.fail(f"this kernel cannot shape a link with tc tbf: {probe.stderr.strip()}")


def rss_kib(pid: int) -> int:
    """A process's resident memory in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")
