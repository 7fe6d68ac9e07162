"""One relay process of a scenario test: its config, its log file, its readiness and its end.

A :class:`RelayNode` is made by a :class:`~tests.harness.cluster.Cluster`;
see the package docstring for how the two are used together.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from relay.config.hosts import url_host
from relay.workers.spawn import TEMPLATE_NAME
from tests.support import WAIT, Admin, Browser

#: Bound on a start: several interpreters importing relay at once on a loaded
#: machine take a while (the supervisor's own bound on its workers is 30 s).
START_WAIT = 3 * WAIT
#: How often a wait looks again at a condition it cannot be told about (a log
#: line, a process that exited, a port another process still holds).
POLL = 0.05
#: Settings a node inherits from the test's environment that would make it talk
#: to the systemd running the tests (its own notify socket replaces them).
_SYSTEMD_VARIABLES = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    # A store would make a stop keep the browsers instead of closing them with 1001.
    "FDSTORE",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)


def hold_port(host: str, port: int = 0, within: float = WAIT) -> socket.socket:
    """Bind ``port`` (0: one the OS picks) on ``host`` without listening, and keep it.

    Linux lets another ``SO_REUSEADDR`` socket (relay's listeners set it) bind
    and listen on a port whose other sockets do not listen; no one else gets
    it, so a port named in a config upfront cannot be taken before the node
    binds it. A port still held by a process that is exiting is asked for
    again until ``within`` seconds have passed.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + within
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
        time.sleep(POLL)  # a bounded poll until the port is free again


def held_port(sock: socket.socket) -> int:
    """The port ``sock`` (from :func:`hold_port`) holds."""
    return int(sock.getsockname()[1])


def _ready_ports(ready: str) -> dict[str, list[int]]:
    """The client and admin ports in the ``STATUS=`` of a ``READY=1`` notification.

    A lone node says ``serving browsers on H:P, admin on H:P``; a supervisor
    ``N workers serving browsers on ws://H:P; admin on http://H:P``.
    """
    status = next(line for line in ready.splitlines() if line.startswith("STATUS="))
    browsers, _, admins = status.partition("admin on ")
    browsers = browsers.split("serving browsers on ", 1)[1].rstrip(" ,;")

    def ports(addresses: str) -> list[int]:
        return [int(address.rsplit(":", 1)[1]) for address in addresses.split(", ")]

    return {"client": ports(browsers), "admin": ports(admins)}


class RelayNode:
    """``relay serve`` (with ``workers``, a supervisor and its workers) as one process group.

    Before :meth:`start`, :attr:`config` is the plain dict the node will read
    (servers[0] the client listener, servers[1] the admin listener); edit it
    freely. Each start writes it to :attr:`config_path`, logs to a new file
    (:attr:`log_path`) and returns once the node has said ``READY=1``.
    """

    def __init__(
        self,
        name: str,
        directory: Path,
        config: dict[str, Any],
        *,
        host: str,
        workers: int | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Prepare (not start) a node keeping its files in ``directory``."""
        self.name = name
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.host = host
        self.workers = workers
        self.args = list(args)
        self.env = dict(env or {})
        self.config_path = directory / "relay.json"
        #: One log file per start, oldest first: a restart's lines are its own.
        self.log_paths: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None
        #: The ports the node bound, by server index: a restart binds them again.
        self.bound: dict[int, int] = {}
        self._holds: list[socket.socket] = []
        # The node's systemd: READY=1 is the event a start waits for.
        self._notify_name = f"relay-test-{secrets.token_hex(8)}"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind("\0" + self._notify_name)

    # -- what a test talks to

    @property
    def pid(self) -> int:
        """The process id (with workers, the supervisor's)."""
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        """Whether the process started last is still alive."""
        return self.proc is not None and self.proc.poll() is None

    def _port(self, kind: str) -> int:
        index = next(i for i, server in enumerate(self.config["servers"]) if server["type"] == kind)
        return self.bound.get(index) or int(self.config["servers"][index]["port"])

    def _tls(self, kind: str) -> bool:
        return any(s["type"] == kind and "ssl.cert" in s for s in self.config["servers"])

    @property
    def client_port(self) -> int:
        """The (first) client listener's port."""
        return self._port("client")

    @property
    def admin_port(self) -> int:
        """The (first) admin listener's port."""
        return self._port("admin")

    @property
    def client_url(self) -> str:
        """``ws://host:port`` (``wss://`` with TLS) of the client listener."""
        scheme = "wss" if self._tls("client") else "ws"
        return f"{scheme}://{url_host(self.host)}:{self.client_port}"

    @property
    def admin_url(self) -> str:
        """``http://host:port`` (``https://`` with TLS) of the admin listener."""
        scheme = "https" if self._tls("admin") else "http"
        return f"{scheme}://{url_host(self.host)}:{self.admin_port}"

    def admin(self, session: aiohttp.ClientSession) -> Admin:
        """An application server posting to this node with ``session``."""
        scheme = "https" if self._tls("admin") else "http"
        return Admin(session, self.admin_port, scheme, host=self.host)

    async def browser(self, *keys: str, path: str = "/", **kwargs: Any) -> Browser:
        """A browser on this node, subscribed to ``keys`` (if any); the test closes it."""
        browser = await Browser.open(self.client_port, path, host=self.host, **kwargs)
        if keys:
            await browser.subscribe(*keys)
        return browser

    @property
    def log_path(self) -> Path:
        """The log file of the latest start (stdout and stderr)."""
        assert self.log_paths, f"{self.name} was never started"
        return self.log_paths[-1]

    @property
    def log(self) -> str:
        """Everything the latest start logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, count: int = 1, timeout: float = WAIT) -> None:
        """Poll (bounded) until the regular expression ``pattern`` occurs ``count`` times."""
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.log)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not logged {count} times:\n{self.log}")
            time.sleep(POLL / 5)

    def next_notice(self, wanted: Callable[[str], bool], timeout: float = WAIT) -> str:
        """The next sd_notify datagram for which ``wanted(text)`` holds (others are skipped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self._notify.settimeout(left)
            try:
                text = self._notify.recv(4096).decode()
            except TimeoutError:
                break
            if wanted(text):
                return text
        raise AssertionError(f"{self.name}: no such notification; the log:\n{self.log}")

    # -- lifecycle

    def spawn(self) -> None:
        """Write the config and start the process; :meth:`await_ready` waits for it."""
        assert not self.running, f"{self.name} is running: kill or stop it first"
        config = copy.deepcopy(self.config)
        for index, server in enumerate(config["servers"]):
            server["port"] = self.bound.get(index, server["port"])
        self._hold_ports(config)
        self.config_path.write_bytes(orjson.dumps(config))
        self._drain_notices()
        self.log_paths.append(self.directory / f"relay.{len(self.log_paths) + 1}.log")
        command = [sys.executable, "-m", "relay", "serve", "--config", str(self.config_path)]
        if self.workers is not None:
            command += ["--workers", str(self.workers)]
        environ = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_VARIABLES}
        environ |= {"PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": "@" + self._notify_name}
        with self.log_path.open("wb") as log:
            # A session of its own: stopping it stops any worker it started, too.
            self.proc = subprocess.Popen(
                [*command, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environ | self.env,
                start_new_session=True,
            )

    def await_ready(self, deadline: float) -> None:
        """Wait for ``READY=1`` (until the ``time.monotonic()`` ``deadline``), read the ports.

        Raises:
            AssertionError: the node exited or did not become ready; it names
                the node and ends with its log.
        """
        assert self.proc is not None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise AssertionError(f"{self.name} did not become ready:\n{self.log}")
            self._notify.settimeout(min(left, POLL))
            try:
                text = self._notify.recv(4096).decode()
            except TimeoutError:
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    raise AssertionError(
                        f"{self.name} exited with {code} before it was ready:\n{self.log}"
                    ) from None
                continue
            if "READY=1" in text.splitlines():  # after MAINPID= when it took over
                break
        ports = _ready_ports(text)
        for index, server in enumerate(self.config["servers"]):
            self.bound[index] = ports[server["type"]].pop(0)
        self._release_ports()

    def start(self) -> RelayNode:
        """Start and wait (bounded) until the node is ready; see :meth:`await_ready`."""
        self.spawn()
        self.await_ready(time.monotonic() + START_WAIT)
        return self

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process (the supervisor, with workers)."""
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 2 * WAIT) -> int:
        """Wait for the process to exit; return its exit status."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """``kill -9`` the whole process group (workers included) and reap it."""
        # Only while the process is not reaped: its group id is then still ours.
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(WAIT)

    def stop(self, timeout: float = 2 * WAIT) -> None:
        """SIGTERM, as systemd stops relay; SIGKILL for what is left after ``timeout``."""
        if self.running:
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.wait(timeout)
        self.kill()

    def close(self) -> None:
        """Kill what is left of the node; free its notify socket and held ports."""
        self.kill()
        self._release_ports()
        self._notify.close()

    def children(self) -> set[int]:
        """The pids of the node's child processes (its workers)."""
        return children_of(self.pid)

    def hold_admin_port(self) -> int:
        """Pick the admin port now (held until the node binds it) and write it into the config.

        For configs that must name a port before the node starts: a mesh's
        peer lists name every node's admin port.
        """
        sock = hold_port(self.host)
        self._holds.append(sock)
        admin = next(s for s in self.config["servers"] if s["type"] == "admin")
        admin["port"] = held_port(sock)
        return held_port(sock)

    def _hold_ports(self, config: dict[str, Any]) -> None:
        held = {held_port(sock) for sock in self._holds}
        for server in config["servers"]:
            port = server["port"]
            if port and port not in held:
                try:
                    self._holds.append(hold_port(server.get("listen") or self.host, port))
                except OSError as exc:
                    raise AssertionError(f"{self.name}: port {port} stays taken: {exc}") from exc

    def _release_ports(self) -> None:
        for sock in self._holds:
            sock.close()
        self._holds.clear()

    def _drain_notices(self) -> None:
        """Forget what an earlier run said, so that its READY=1 is not taken for this one's."""
        self._notify.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self._notify.recv(4096)
        self._notify.setblocking(True)


def children_of(pid: int) -> set[int]:
    """The pids whose parent is ``pid``, from /proc; not a ``--workers`` node's template process.

    The template serves nothing: it forks the workers (``relay.workers.spawn``).
    """
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        match = re.search(r"^PPid:\s+(\d+)$", status, re.MULTILINE)
        template = re.search(rf"^Name:\s+{TEMPLATE_NAME}$", status, re.MULTILINE)
        if match and int(match.group(1)) == pid and not template:
            found.add(int(entry.name))
    return found


def run_serve(*args: str, timeout: float = 3 * WAIT) -> subprocess.CompletedProcess[str]:
    """``relay serve ARGS`` run to its end, its output captured: for a node that must refuse."""
    return subprocess.run(
        [sys.executable, "-m", "relay", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
