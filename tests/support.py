"""Helpers shared by the tests: a fake clock, configs on port 0, and real clients."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from relay.config.hosts import base_url

#: Upper bound for anything a test waits on; a hang fails fast instead of stalling CI.
WAIT = 10.0


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` until true, failing after ``WAIT`` seconds.

    For state that has no event to wait on from outside the process, such as
    a server noticing that a client's TCP connection went away.
    """
    deadline = time.monotonic() + WAIT
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def local_config(**sections: Any) -> dict[str, Any]:
    """A config with one client and one admin listener on loopback, OS-picked ports."""
    config: dict[str, Any] = {
        "servers": [
            {"type": "client", "port": 0, "listen": "127.0.0.1"},
            {"type": "admin", "port": 0, "listen": "127.0.0.1"},
        ]
    }
    config.update(sections)
    return config


def notification(*subscribers: str, unique_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A notification shaped like the ones Phorge posts."""
    body: dict[str, Any] = {
        "key": subscribers[0] if subscribers else "PHID-TEST",
        "type": "notification",
        "subscribers": list(subscribers),
    }
    if unique_id is not None:
        body["uniqueID"] = unique_id
    body.update(fields)
    return body


class Browser:
    """A real WebSocket client speaking the browser side of Aphlict's protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(
        cls, port: int, path: str = "/", *, host: str = "127.0.0.1", **kwargs: Any
    ) -> Browser:
        """Connect to ``host`` (an IPv6 address too) on ``port``; ``kwargs`` go to websockets."""
        ws = await websockets.connect(f"{base_url('ws', host, port)}{path}", **kwargs)
        return cls(ws)

    async def send(self, command: str, data: Any = None) -> None:
        frame: dict[str, Any] = {"command": command}
        if data is not None:
            frame["data"] = data
        await self.ws.send(orjson.dumps(frame).decode())

    async def subscribe(self, *keys: str) -> None:
        """Subscribe and wait until the server has applied it (ping/pong barrier)."""
        await self.send("subscribe", list(keys))
        await self.sync()

    async def unsubscribe(self, *keys: str) -> None:
        await self.send("unsubscribe", list(keys))
        await self.sync()

    async def sync(self) -> None:
        """Round-trip a ping: everything the server had sent before it is now received."""
        await self.send("ping")
        self.pending = await self.messages_until_pong()

    async def messages_until_pong(self) -> list[dict[str, Any]]:
        received: list[dict[str, Any]] = []
        async with asyncio.timeout(WAIT):
            while True:
                message = orjson.loads(await self.ws.recv())
                if message == {"type": "pong"}:
                    return received
                received.append(message)

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            return orjson.loads(await self.ws.recv())  # type: ignore[no-any-return]

    async def drain(self) -> list[dict[str, Any]]:
        """Every message delivered so far, confirmed by a ping barrier."""
        await self.send("ping")
        return await self.messages_until_pong()

    async def close(self) -> None:
        await self.ws.close()


class Admin:
    """An application server posting to a node's admin port."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        port: int,
        scheme: str = "http",
        host: str = "127.0.0.1",
    ) -> None:
        self.session = session
        self.base = base_url(scheme, host, port)

    async def post(
        self, body: Any, instance: str | None = None, *, raw: bytes | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        params = {"instance": instance} if instance is not None else {}
        data = raw if raw is not None else orjson.dumps(body)
        async with self.session.post(self.base + "/", params=params, data=data, **kwargs) as r:
            text = await r.read()
            try:
                return r.status, orjson.loads(text)
            except orjson.JSONDecodeError:
                return r.status, text.decode()

    async def status(self, instance: str | None = None) -> dict[str, Any]:
        params = {"instance": instance} if instance is not None else {}
        async with self.session.get(self.base + "/status/", params=params) as r:
            assert r.status == 200
            assert r.content_type == "application/json"
            return await r.json()  # type: ignore[no-any-return]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) * 1024


_READY = re.compile(r"(client|admin) listener ready on \w+://([\d.]+|\[[\da-f:]+\]):(\d+)")


class RelayProcess:
    """``relay serve`` in its own OS process, its ports read from its readiness log lines."""

    def __init__(self, config_path: Path, extra_args: Sequence[str] = ()) -> None:
        self.config_path = config_path
        self.args = [
            sys.executable,
            "-m",
            "relay",
            "serve",
            "--config",
            str(config_path),
            *extra_args,
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.client_ports: list[int] = []
        self.admin_ports: list[int] = []
        self.output: list[str] = []

    def start(self, clients: int = 1, admins: int = 1) -> RelayProcess:
        """Start and wait (bounded) until every listener has logged that it is ready."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.args, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        deadline = time.monotonic() + WAIT
        assert self.proc.stderr is not None
        while len(self.client_ports) < clients or len(self.admin_ports) < admins:
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("relay did not become ready:\n" + "".join(self.output))
            line = self.proc.stderr.readline()
            if not line:
                self.proc.wait(WAIT)
                raise AssertionError("relay exited early:\n" + "".join(self.output))
            self.output.append(line)
            match = _READY.search(line)
            if match:
                ports = self.client_ports if match.group(1) == "client" else self.admin_ports
                ports.append(int(match.group(3)))
        return self

    def follow_log(self) -> list[tuple[float, str]]:
        """Keep reading the log in a thread (so a chatty node never blocks on a full pipe).

        Returns the list it appends ``(time.time(), line)`` to.
        """
        assert self.proc is not None
        assert self.proc.stderr is not None
        stderr = self.proc.stderr
        self.timed_lines: list[tuple[float, str]] = []

        def follow() -> None:
            for line in stderr:
                self.timed_lines.append((time.time(), line))
                self.output.append(line)

        self._follower = threading.Thread(target=follow, daemon=True)
        self._follower.start()
        return self.timed_lines

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = WAIT) -> tuple[int, str]:
        """Wait for exit; return the exit status and everything it logged."""
        assert self.proc is not None
        if hasattr(self, "_follower"):
            self.proc.wait(timeout)
            self._follower.join(timeout)
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()
        else:
            _, rest = self.proc.communicate(timeout=timeout)
            self.output.append(rest)
        return self.proc.returncode, "".join(self.output)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.wait()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the OS picked as free just now, for configs that must name peers' ports upfront.

    Cluster nodes list each other's admin ports in their config files, so the
    ports must be known before any node starts; the OS still picks them.
    ``host`` may be an IPv6 address.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(family)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def post_raw(port: int, headers: bytes, chunks: Any) -> bytes:
    """Send a request whose body comes from ``chunks``; return the response head."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
            + headers
            + b"\r\n"
        )
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop listening once it has said no
        return sock.recv(4096)
