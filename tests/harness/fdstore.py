"""A stand-in for systemd's file descriptor store, for restart tests without systemd.

There is no systemd in the test container, so :class:`FakeSystemd` plays the
part relay sees of it: a notify socket that takes ``FDSTORE=1`` messages and
keeps their descriptors by ``FDNAME``, closes them on ``FDSTOREREMOVE=1``,
answers ``BARRIER=1`` by closing the pipe sent with it, and reads
``READY=1``; and it starts each ``relay serve`` with what it keeps at
descriptor 3 onwards, ``LISTEN_FDS``, ``LISTEN_FDNAMES`` and ``LISTEN_PID``
(the child's own pid: set by a launcher that then execs relay), as systemd
does on a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.harness.node import START_WAIT
from tests.support import WAIT

#: Puts the passed descriptors at 3, 4, ... (wherever they were), names its own pid, execs relay.
LAUNCHER = """
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",") if fd]
top = max(fds + [3 + len(fds)]) + 1
moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, top) for fd in fds]
for fd in fds:
    os.close(fd)
for index, fd in enumerate(moved):
    os.dup2(fd, 3 + index)
    os.close(fd)
if fds:
    os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""


class FakeSystemd:
    """One service's notify socket and file descriptor store; starts the service's processes."""

    def __init__(self, directory: Path, capacity: int = 262144) -> None:
        """Listen for notifications; ``capacity`` is the unit's ``FileDescriptorStoreMax=``."""
        self.directory = directory
        self.capacity = capacity
        self._name = f"relay-fdstore-test-{secrets.token_hex(8)}"
        #: ``$NOTIFY_SOCKET`` of the service (an abstract socket's name).
        self.notify_socket = "@" + self._name
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + self._name)
        self._sock.setblocking(False)
        # Large messages: a batch of 253 descriptors is one datagram.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        #: What the store keeps, in the order stored: (name, descriptor).
        self.stored: list[tuple[str, int]] = []
        self.notices: list[str] = []
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)
        self.logs: list[Path] = []
        #: Every process started, killed by :meth:`close` if still running.
        self.processes: list[subprocess.Popen[bytes]] = []

    def names(self) -> list[str]:
        """The names of what the store keeps, one per descriptor."""
        return [name for name, _ in self.stored]

    def _readable(self) -> None:
        while True:
            try:
                data, fds, _flags, _address = socket.recv_fds(self._sock, 65536, 253)
            except BlockingIOError:
                return
            self._notice(data.decode(), fds)

    def _notice(self, text: str, fds: list[int]) -> None:
        self.notices.append(text)
        fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        if fields.get("FDSTORE") == "1" and len(self.stored) + len(fds) <= self.capacity:
            self.stored += [(fields.get("FDNAME", "stored"), fd) for fd in fds]
            return
        for fd in fds:  # BARRIER=1's pipe: closing it says everything before was read
            os.close(fd)
        if fields.get("FDSTOREREMOVE") == "1":
            name = fields.get("FDNAME")
            for _, fd in [entry for entry in self.stored if entry[0] == name]:
                os.close(fd)
            self.stored = [entry for entry in self.stored if entry[0] != name]
        if fields.get("READY") == "1":
            self._ready.put_nowait(text)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """Start ``relay serve ARGS`` with the store's descriptors passed, as a service start."""
        fds = [fd for _, fd in self.stored]
        environ = {
            name: value
            for name, value in os.environ.items()
            if name not in ("WATCHDOG_USEC", "WATCHDOG_PID") and not name.startswith("LISTEN_")
        }
        environ |= {
            "PYTHONUNBUFFERED": "1",
            "NOTIFY_SOCKET": self.notify_socket,
            "FDSTORE": str(self.capacity),
        }
        if fds:
            environ |= {"LISTEN_FDS": str(len(fds)), "LISTEN_FDNAMES": ":".join(self.names())}
        log_path = self.directory / f"relay.{len(self.logs) + 1}.log"
        self.logs.append(log_path)
        command = [sys.executable, "-m", "relay", "serve", *args]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER, ",".join(map(str, fds)), *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environ,
                pass_fds=fds,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    async def ready(self) -> dict[str, int]:
        """Wait for the next ``READY=1``; return the client and admin ports of its ``STATUS=``.

        Bounded by twice ``START_WAIT``: several interpreters starting on a loaded
        machine are slow, and a ``--workers`` start here is two in a row (a lone
        process, then a supervisor, its template and workers, all under coverage
        in CI, where one run took more than ``START_WAIT``).
        """
        async with asyncio.timeout(2 * START_WAIT):
            text = await self._ready.get()
        status = next(line for line in text.splitlines() if line.startswith("STATUS="))
        # A node says "..., admin on ..."; a --workers node's supervisor "...; admin on ...".
        clients, _, admins = status.replace("; admin on ", ", admin on ").partition(", admin on ")
        return {
            "client": int(clients.rsplit(":", 1)[1]),
            "admin": int(admins.split(", ")[0].rsplit(":", 1)[1]),
        }

    def log(self, index: int = -1) -> str:
        """What the ``index``-th process started logged (the latest by default)."""
        return self.logs[index].read_text(errors="replace")

    def close(self) -> None:
        """Kill what still runs (its session); stop listening; close what the store keeps."""
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(WAIT)
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        for _, fd in self.stored:
            os.close(fd)
        self.stored = []
