"""A multi-process relay node under test: ``relay serve --workers N`` as its own process.

The test plays systemd: it binds the ``NOTIFY_SOCKET`` the supervisor
reports to, waits for its ``READY=1`` (sent once every worker serves) and
reads the node's ports from the status line that comes with it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from tests.support import WAIT

_STATUS = re.compile(
    r"STATUS=(\d+) workers serving browsers on wss?://[^:]+:(\d+); admin on https?://[^:]+:(\d+)"
)


class SupervisedNode:
    """A supervisor and its workers, started from a config dict."""

    def __init__(
        self,
        directory: Path,
        config: dict[str, Any],
        workers: int | None = 2,
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.directory = directory
        self.env = env or {}
        self.config_path = directory / "relay.json"
        self.config_path.write_bytes(orjson.dumps(config))
        self.args = [sys.executable, "-m", "relay", "serve", "--config", str(self.config_path)]
        if workers is not None:
            self.args += ["--workers", str(workers)]
        self.args += extra_args
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(directory / "notify.sock"))
        self.notify.settimeout(WAIT)
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.client_port = self.admin_port = 0
        self._follower: threading.Thread | None = None

    def start(self) -> SupervisedNode:
        """Start, and return once the supervisor reports READY=1 (bounded)."""
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "NOTIFY_SOCKET": str(self.notify_path),
            **self.env,
        }
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        self._follow()
        # Bounded like the supervisor's own start (30 s): on a loaded machine two
        # interpreters importing relay at once take a while.
        ready = self.next_notice(lambda text: text.startswith("READY=1"), timeout=3 * WAIT)
        match = _STATUS.search(ready)
        assert match, ready
        self.client_port, self.admin_port = int(match.group(2)), int(match.group(3))
        return self

    @property
    def notify_path(self) -> Path:
        return self.directory / "notify.sock"

    def next_notice(self, wanted: Any, timeout: float = WAIT) -> str:
        """The next sd_notify datagram for which ``wanted(text)`` holds (others are skipped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.notify.settimeout(left)
            try:
                text = self.notify.recv(4096).decode()
            except TimeoutError:
                break
            if wanted(text):
                return text
        raise AssertionError("no such notification; the log:\n" + self.log)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for_log(self, pattern: str, count: int = 1) -> None:
        """Poll (bounded) until ``pattern`` occurs ``count`` times in the log."""
        deadline = time.monotonic() + WAIT
        while len(re.findall(pattern, self.log)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not logged {count} times:\n{self.log}")
            time.sleep(0.01)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 2 * WAIT) -> int:
        """Wait for the supervisor to exit; returns its exit status."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._close_pipe()
        return code

    def _close_pipe(self) -> None:
        if self._follower is not None:
            self._follower.join(WAIT)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def stop(self) -> None:
        """Stop it if it still runs (SIGTERM, then SIGKILL), and free the socket."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(2 * WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)
        self._close_pipe()
        self.notify.close()

    def _follow(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        stderr = self.proc.stderr

        def follow() -> None:
            for line in stderr:
                self.lines.append(line)

        self._follower = threading.Thread(target=follow, daemon=True)
        self._follower.start()


def children_of(pid: int) -> set[int]:
    """The pids whose parent is ``pid``, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        match = re.search(r"^PPid:\s+(\d+)$", status, re.MULTILINE)
        if match and int(match.group(1)) == pid:
            found.add(int(entry.name))
    return found
