"""Throwaway Redis servers for tests: start, kill -9, restart on the same port.

Each :class:`RedisServer` runs its own ``redis-server`` in its own temporary
directory on a loopback port the OS picked, with persistence off (a restart
comes back empty, as a Redis without persistence does). Readiness is awaited
by polling ``PING`` with a bounded deadline, never by sleeping a fixed time.
If ``redis-server`` is missing the harness fails loudly, naming the Debian
package to install.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

__all__ = ["DEBIAN_PACKAGE", "RedisServer", "require_redis_server"]

DEBIAN_PACKAGE = "redis-server"
#: How long a server may take to answer PING before the harness gives up.
START_DEADLINE = 10.0
#: How many fresh ports to try when the one picked was taken meanwhile.
PORT_ATTEMPTS = 5


def require_redis_server() -> str:
    """The path of ``redis-server``; fail loudly, naming the package, when it is missing."""
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if path is None:
        raise RuntimeError(
            f"redis-server not found: install the Debian package {DEBIAN_PACKAGE!r} "
            f"(apt-get install {DEBIAN_PACKAGE}), or run scripts/ensure-services as root"
        )
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process of a test, in ``directory``."""

    def __init__(
        self, directory: Path, *extra_args: str, tls: tuple[Path, Path, Path] | None = None
    ) -> None:
        """Prepare (not start) a server keeping its files in ``directory``.

        With ``tls`` (certificate, key, CA files), it serves TLS only.
        """
        self.binary = require_redis_server()
        self.tls = tls
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.extra_args = extra_args
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` (``rediss://`` with TLS)."""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def _listen_args(self, port: int) -> list[str]:
        if self.tls is None:
            return ["--port", str(port)]
        cert, key, ca = self.tls
        return [
            *("--port", "0", "--tls-port", str(port)),
            *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
            *("--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"),
        ]

    def _command_line(self, port: int) -> list[str]:
        return [
            self.binary,
            *self.extra_args,
            *self._listen_args(port),
            *("--bind", "127.0.0.1", "--dir", str(self.directory)),
            *("--save", "", "--appendonly", "no"),
            *("--logfile", str(self.directory / "redis.log")),
        ]

    def standby(self) -> None:
        """After ``kill``: spawn the restart now, held back until ``resume``.

        Forking the (large) test process stalls its event loop for a moment;
        a test that times its own requests across a restart forks beforehand.
        """
        assert self.port, "standby follows kill"
        assert self.proc is None, "standby follows kill"
        self.proc = subprocess.Popen(
            [
                "/bin/sh",
                "-c",
                'read _ && exec "$@"',
                "redis-standby",
                *self._command_line(self.port),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def resume(self) -> None:
        """Let the server held back by ``standby`` start, and wait for PING."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()
        if not self._wait_ready(self.port):
            raise RuntimeError("redis-server did not come back")

    def start(self) -> RedisServer:
        """Start on a fresh free port (or the same port again after ``kill``) and wait for PING."""
        attempts = 1 if self.port else PORT_ATTEMPTS
        for _ in range(attempts):
            port = self.port or _free_port()
            self.proc = subprocess.Popen(
                self._command_line(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if self._wait_ready(port):
                self.port = port
                return self
            self.kill()
        raise RuntimeError(
            "redis-server did not start:\n" + (self.directory / "redis.log").read_text()[-2000:]
        )

    def _wait_ready(self, port: int) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # exited: most likely the port was taken
            try:
                with self._connect(port) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return True
            except OSError:
                pass
            time.sleep(0.01)  # a bounded poll of the port, not a synchronisation sleep
        return False

    @classmethod
    def sentinel(cls, directory: Path, master: str, master_port: int) -> RedisServer:
        """A Sentinel (started) watching the master ``master`` on ``master_port``."""
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "sentinel.conf"  # Sentinel rewrites it: it must be its own
        conf.write_text(
            f"sentinel monitor {master} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {master} 1000\n"
        )
        return cls(directory, str(conf), "--sentinel").start()

    def _connect(self, port: int) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
        if self.tls is None:
            return sock
        context = ssl.create_default_context(cafile=str(self.tls[2]))
        return context.wrap_socket(sock, server_hostname="127.0.0.1")

    def command(self, *args: str) -> bytes:
        """Send one inline command and return the raw reply (for test set-up only)."""
        with self._connect(self.port) as sock:
            sock.sendall((" ".join(args) + "\r\n").encode())
            return sock.recv(65536)

    def kill(self) -> None:
        """``kill -9`` the server and reap it (the port stays recorded for ``start``)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        """Stop for good."""
        self.kill()
