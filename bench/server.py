"""relay nodes under test: each one ``python -m relay serve`` in its own process."""

from __future__ import annotations

import compileall
import functools
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import procfs

#: Longest a node may take to log that its listeners are ready (a node of several
#: workers on a machine busy with other work can take over 15 s).
START_TIMEOUT = 45.0
#: Longest a node may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0

_READY = re.compile(r"(client|admin) listener ready on \w+://[\d.]+:(\d+)")
#: A multi-process node is ready once its supervisor says every worker serves.
_NODE_READY = re.compile(
    r"relay node ready: \d+ workers serving browsers on \w+://[\d.]+:(\d+); "
    r"admin on \w+://[\d.]+:(\d+)"
)


def relay_root() -> str:
    """The directory holding the ``relay`` package this process would import."""
    spec = importlib.util.find_spec("relay")
    if spec is None or spec.origin is None:
        raise RuntimeError("relay is not importable: install it, or pass --relay-src")
    return str(Path(spec.origin).resolve().parent.parent)


@functools.cache
def compile_relay(source: str) -> None:
    """Write the bytecode of the ``relay`` package under ``source`` (changed files only).

    An installed relay has it (pip compiles at install); a checkout run with
    PYTHONDONTWRITEBYTECODE set never gets it, and each of a node's processes
    would then compile every module at start: 2.4 s to ready instead of 4.4 s
    for a --workers 6 node, and ~4 MiB less per process (bench idle-node).
    """
    compileall.compile_dir(Path(source) / "relay", quiet=1)


#: The command name of the process a ``--workers`` node forks its workers from
#: (``relay.workers.spawn.TEMPLATE_NAME``; not imported, the bench may run another checkout).
TEMPLATE = "relay-template"


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (for peers that must know it in advance)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def node_config(
    admin_port: int = 0, peers: list[int] | None = None, broker: str | None = None
) -> dict[str, Any]:
    """A loopback config: one client listener on an OS-picked port, one admin listener.

    With ``broker`` (a Redis URL), the node runs in broker mode.
    """
    config: dict[str, Any] = {
        "servers": [
            {"type": "client", "port": 0, "listen": "127.0.0.1"},
            {"type": "admin", "port": admin_port, "listen": "127.0.0.1"},
        ]
    }
    if peers:
        config["cluster"] = [
            {"host": "127.0.0.1", "port": port, "protocol": "http"} for port in peers
        ]
    if broker:
        config["broker"] = {"url": broker}
    return config


class RelayNode:
    """One ``relay serve`` process; its ports are read from its readiness log lines."""

    def __init__(
        self,
        config: dict[str, Any],
        name: str = "relay",
        profile: Path | None = None,
        workers: int = 1,
        relay_src: Path | None = None,
        traced: Path | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        """Prepare a node running ``config``; nothing starts until ``start``.

        With ``profile``, the node runs under cProfile and writes its stats
        there. With ``traced``, it runs under tracemalloc and writes a snapshot
        there on each SIGUSR1 (``bench.traced``). With ``workers`` > 1 it is a
        supervisor and its worker processes (``relay serve --workers N``); its
        CPU time is theirs added up. With
        ``relay_src`` (a checkout), the node runs the ``relay`` package there.
        ``args`` are added to ``relay serve``'s (``--handoff-socket PATH``, say).
        """
        self.name = name
        self.workers = workers
        self.relay_src = relay_src
        self.config = config
        self.profile = profile
        self.traced = traced
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.client_port = 0
        self.admin_port = 0
        self.log: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self._config_dir = tempfile.TemporaryDirectory(prefix="relay-bench-")

    @property
    def pid(self) -> int:
        """The node's process id."""
        assert self.proc is not None, "the node is not started"
        return self.proc.pid

    def start(self) -> RelayNode:
        """Start the node and wait (bounded) until both listeners are ready.

        Raises:
            RuntimeError: the node exited or did not become ready in time.
        """
        return self.launch().wait_ready()

    def launch(self) -> RelayNode:
        """Start the process without waiting for it (to put it in a cgroup at once, say)."""
        path = Path(self._config_dir.name) / "relay.json"
        path.write_text(json.dumps(self.config))
        # The node runs the relay this process imports, whatever the working directory.
        source = str(self.relay_src) if self.relay_src is not None else relay_root()
        compile_relay(source)
        roots = [source, os.environ.get("PYTHONPATH")]
        command = ["-m", "relay", "serve", "--config", str(path), *self.args]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        if self.profile is not None:
            roots.append(str(Path(__file__).resolve().parent.parent))
            command = ["-m", "bench.profiled", str(self.profile), *command[2:]]
        elif self.traced is not None:
            roots.append(str(Path(__file__).resolve().parent.parent))
            command = ["-m", "bench.traced", str(self.traced), *command[2:]]
        pythonpath = os.pathsep.join(filter(None, roots))
        self.proc = subprocess.Popen(
            [sys.executable, *command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self._config_dir.name,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath},
        )
        # A thread keeps reading the node's log so that a full pipe never blocks it.
        self._reader = threading.Thread(target=self._read_log, name=f"{self.name}-log", daemon=True)
        self._reader.start()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> RelayNode:
        """Wait (bounded) until both listeners are ready.

        Raises:
            RuntimeError: the node exited or did not become ready in time.
        """
        if not self._ready.wait(timeout) or not (self.client_port and self.admin_port):
            self.stop()
            raise RuntimeError(f"{self.name} did not start:\n" + "".join(self.log))
        return self

    def _read_log(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace")
            self.log.append(line)
            if self.workers > 1:
                # Each worker logs its listeners as it starts; only the
                # supervisor's line says that all of them serve.
                ready = _NODE_READY.search(line)
                if ready:
                    self.client_port, self.admin_port = int(ready.group(1)), int(ready.group(2))
                    self._ready.set()
                continue
            match = _READY.search(line)
            if match:
                if match.group(1) == "client":
                    self.client_port = int(match.group(2))
                else:
                    self.admin_port = int(match.group(2))
                if self.client_port and self.admin_port:
                    self._ready.set()
        # The node exited: wake a start() that is still waiting.
        self._ready.set()

    def cpu_seconds(self) -> float:
        """CPU time the node has used so far (its workers' too)."""
        return sum(procfs.cpu_seconds(pid) for pid in self.pids())

    def pids(self) -> list[int]:
        """The node's processes: the supervisor and its workers, or the lone process."""
        if self.workers <= 1:
            return [self.pid]
        return [self.pid, *procfs.children(self.pid)]

    def worker_pids(self) -> list[int]:
        """The processes that serve browsers: the workers, not the supervisor or their template."""
        if self.workers <= 1:
            return [self.pid]
        return [pid for pid in procfs.children(self.pid) if procfs.command_name(pid) != TEMPLATE]

    def rss_bytes(self) -> int:
        """The node's resident memory."""
        return procfs.rss_bytes(self.pid)

    def open_fds(self) -> int:
        """File descriptors the node has open."""
        return procfs.open_fds(self.pid)

    def stop(self) -> None:
        """SIGTERM the node, wait (bounded) for it to exit, kill it if it does not."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT)
        self._config_dir.cleanup()


class RedisProcess:
    """A ``redis-server`` of the benchmark's own: loopback, a free port, no persistence."""

    def __init__(self) -> None:
        """Prepare a server in a temporary directory; nothing starts until ``start``."""
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="relay-bench-redis-")

    @property
    def url(self) -> str:
        """The URL nodes' ``broker`` section names."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        """Start and wait (bounded) until it answers PING.

        Raises:
            RuntimeError: redis-server is missing, exited, or did not answer in time.
        """
        self.port = free_port()
        try:
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", self._dir.name),
                    *("--save", "", "--appendonly", "no"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise RuntimeError("redis-server not found: apt-get install redis-server") from None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)  # a bounded poll of the port
        self.stop()
        raise RuntimeError("redis-server did not start")

    def cpu_seconds(self) -> float:
        """CPU time the server has used so far."""
        assert self.proc is not None
        return procfs.cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then kill if it lingers) and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self._dir.cleanup()


class AphlictNode(RelayNode):
    """Aphlict (Phorge's Node.js server) from an extraction, for figures beside relay's.

    ``directory`` holds ``aphlict_server.js`` with ``node_modules/ws`` installed
    (see bench/README.md). Aphlict cannot listen on port 0 and report the port,
    so the ports are picked beforehand; it is ready once its admin port accepts.
    """

    def __init__(
        self, directory: Path, config: dict[str, Any], name: str, client_port: int, admin_port: int
    ) -> None:
        """Prepare a node running Aphlict's ``config``; nothing starts until ``start``."""
        super().__init__(config, name)
        self.directory = directory
        self.client_port = client_port
        self.admin_port = admin_port

    def start(self) -> AphlictNode:
        """Start Aphlict under ``node`` and wait (bounded) until its admin port accepts."""
        path = Path(self._config_dir.name) / "aphlict.json"
        path.write_text(json.dumps(self.config))
        self.proc = subprocess.Popen(
            ["node", str(self.directory / "aphlict_server.js"), f"--config={path}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self._config_dir.name,
        )
        self._reader = threading.Thread(target=self._read_log, name=f"{self.name}-log", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.admin_port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} (Aphlict) did not start:\n" + "".join(self.log))

    def _read_log(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.log.append(raw.decode(errors="replace"))


def aphlict_config(client_port: int, admin_port: int, peers: list[int]) -> dict[str, Any]:
    """Aphlict's own config format: a client and an admin server, and the cluster."""
    return {
        "servers": [
            {"type": "client", "port": client_port, "listen": "127.0.0.1"},
            {"type": "admin", "port": admin_port, "listen": "127.0.0.1"},
        ],
        "logs": [],
        "cluster": [{"host": "127.0.0.1", "port": port, "protocol": "http"} for port in peers],
    }
