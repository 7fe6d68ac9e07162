"""Throwaway MariaDB servers for tests: start, replicate, break, kill, restart.

Each :class:`MariaDBServer` runs its own ``mariadbd`` with its own data
directory (copied from a template made once by ``mariadb-install-db``), its
own socket and its own loopback port, with the grant tables in force. The
harness is synchronous (PyMySQL over the server's Unix socket as root); from
async tests, call the slow parts (start, restart) through
``asyncio.to_thread``.

Readiness is always awaited by polling the server with a bounded deadline,
never by sleeping a fixed time. If the MariaDB binaries are missing the
harness fails loudly, naming the Debian package to install.

Typical use (see ``tests/dbwatch/conftest.py`` for the fixtures)::

    factory = MariaDBFactory(tmp_path, make_template(tmp_path / "template"))
    master = factory.start("master", server_id=1)
    replica = factory.start("replica", server_id=2)
    replica.replicate_from(master)
    ...
    factory.close()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

__all__ = [
    "MARIADBD",
    "MariaDBError",
    "MariaDBFactory",
    "MariaDBServer",
    "make_lagging",
    "make_template",
    "pick_free_port",
    "require_binaries",
]

MARIADBD = Path("/usr/sbin/mariadbd")
INSTALL_DB_NAMES = ("mariadb-install-db", "mysql_install_db")
DEBIAN_PACKAGE = "mariadb-server"

#: How long a server may take to become ready before the harness gives up.
START_DEADLINE = 30.0
#: How many fresh ports to try when the one picked was taken meanwhile.
PORT_ATTEMPTS = 5
#: Replication user every server gets (local, not replicated).
REPL_USER = "relay_repl"
REPL_PASSWORD = "relay-repl-secret"

# Small buffers keep many servers cheap; durability is irrelevant here.
_SERVER_TUNING = (
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=4M",
    "--innodb-flush-log-at-trx-commit=2",
    "--sync-binlog=0",
    "--binlog-format=MIXED",
    "--skip-name-resolve",
    "--max-connections=200",
)
_BIND_FAILURE_MARKERS = ("Bind on TCP/IP port", "Address already in use", "Do you already have")


class MariaDBError(RuntimeError):
    """The harness could not do what it was asked; the message says why."""


def require_binaries() -> Path:
    """Return the path of ``mariadb-install-db``; fail loudly if anything is missing."""
    install = next((shutil.which(n) for n in INSTALL_DB_NAMES if shutil.which(n)), None)
    if not MARIADBD.exists() or install is None:
        raise MariaDBError(
            f"MariaDB server binaries not found ({MARIADBD}, mariadb-install-db): "
            f"install the Debian package {DEBIAN_PACKAGE!r} (apt-get install {DEBIAN_PACKAGE})"
        )
    return Path(install)


def make_template(directory: Path) -> Path:
    """Create an initialised, never-started data directory to copy servers from.

    Running ``mariadb-install-db`` once and copying its output is much faster
    than initialising every server.
    """
    install = require_binaries()
    directory.parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(install),
        "--no-defaults",
        f"--datadir={directory}",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        "--innodb-log-file-size=4M",
        "--innodb-buffer-pool-size=16M",
        *_user_option(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise MariaDBError(
            f"mariadb-install-db failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return directory


def _user_option() -> list[str]:
    # mariadbd refuses to run as root unless told to.
    return ["--user=root"] if os.geteuid() == 0 else []


def pick_free_port() -> int:
    """A loopback port that was free a moment ago (mariadbd can not bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class MariaDBServer:
    """One throwaway ``mariadbd``; ``port`` stays the same across restarts."""

    name: str
    basedir: Path
    server_id: int
    template: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def datadir(self) -> Path:
        """The server's own data directory."""
        return self.basedir / "data"

    @property
    def socket_path(self) -> Path:
        """The server's Unix socket (the harness's admin connection uses it)."""
        return self.basedir / "mysqld.sock"

    @property
    def error_log(self) -> Path:
        """The server's error log, quoted when something goes wrong."""
        return self.basedir / "error.log"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    # -- process lifecycle ---------------------------------------------------

    def start(self, deadline: float = START_DEADLINE) -> None:
        """Start the server (first time: on a fresh port) and wait until it answers."""
        if self.running:
            raise MariaDBError(f"{self.name} is already running")
        if not self.datadir.exists():
            self.basedir.mkdir(parents=True, exist_ok=True)
            shutil.copytree(self.template, self.datadir, symlinks=True)
        fresh_port = self.port == 0
        for _attempt in range(PORT_ATTEMPTS if fresh_port else 1):
            if fresh_port:
                self.port = pick_free_port()
            log_offset = self.error_log.stat().st_size if self.error_log.exists() else 0
            self._spawn()
            if self._wait_ready(deadline, log_offset):
                return
            if not (fresh_port and self._bind_failed(log_offset)):
                break
        raise MariaDBError(
            f"{self.name} did not start on port {self.port}; error log:\n{self._log_tail()}"
        )

    def _spawn(self) -> None:
        command = [
            str(MARIADBD),
            "--no-defaults",  # must come first
            f"--datadir={self.datadir}",
            f"--socket={self.socket_path}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={self.basedir / 'mysqld.pid'}",
            f"--log-error={self.error_log}",
            f"--tmpdir={self.basedir}",
            f"--server-id={self.server_id}",
            f"--log-bin={self.basedir / 'binlog'}",
            f"--relay-log={self.basedir / 'relay'}",
            *_SERVER_TUNING,
            *_user_option(),
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _wait_ready(self, deadline: float, log_offset: int) -> bool:
        """Poll until an admin connection works; False if the process died first."""
        assert self.process is not None
        give_up = time.monotonic() + deadline
        while time.monotonic() < give_up:
            if self.process.poll() is not None:
                return False
            if self._socket_accepts():
                try:
                    self._admin_connection(connect_timeout=1).close()
                    return True
                except pymysql.err.OperationalError:
                    pass
            time.sleep(0.02)  # a bounded poll of a condition, not a fixed wait
        self.kill()
        raise MariaDBError(
            f"{self.name} not ready after {deadline:g} s; error log:\n{self._log_tail(log_offset)}"
        )

    def _socket_accepts(self) -> bool:
        """Whether the Unix socket takes connections yet.

        Probed with a plain socket first: PyMySQL leaks its socket when the
        connect itself is refused (a ResourceWarning, an error under
        ``filterwarnings = error``).
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            try:
                probe.connect(str(self.socket_path))
            except OSError:
                return False
            return True

    def _bind_failed(self, log_offset: int) -> bool:
        text = self._log_tail(log_offset)
        return any(marker in text for marker in _BIND_FAILURE_MARKERS)

    def _log_tail(self, offset: int = 0, limit: int = 4000) -> str:
        try:
            with self.error_log.open("rb") as log:
                log.seek(offset)
                return log.read().decode("utf-8", "replace")[-limit:]
        except OSError:
            return "(no error log)"

    def kill(self) -> None:
        """``kill -9`` the server and wait for it to be gone (no clean shutdown)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        # A killed server leaves its socket file behind; the next start must
        # not mistake it for readiness.
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the server down cleanly (SIGTERM), killing it if that takes too long."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self, deadline: float = START_DEADLINE) -> None:
        """Start again on the same port and data directory (after kill or stop)."""
        if self.running:
            self.stop()
        self.start(deadline)

    # -- SQL -------------------------------------------------------------------

    def _admin_connection(self, connect_timeout: float = 5) -> pymysql.connections.Connection[Any]:
        return pymysql.connect(
            unix_socket=str(self.socket_path),
            user="root",
            password="",
            connect_timeout=connect_timeout,
            autocommit=True,
            cursorclass=pymysql.cursors.DictCursor,
            # A local socket needs no TLS; building the default context
            # costs ~70 ms per connection.
            ssl_disabled=True,
        )

    @contextlib.contextmanager
    def connection(self) -> Iterator[pymysql.connections.Connection[Any]]:
        """An autocommit root connection over the socket, closed afterwards."""
        conn = self._admin_connection()
        try:
            yield conn
        finally:
            conn.close()

    def sql(self, *statements: str, args: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Run statements in one session as root; return the rows of the last one.

        ``args`` (PyMySQL ``%s`` parameters) apply to the last statement only.
        """
        rows: list[dict[str, Any]] = []
        with self.connection() as conn, conn.cursor() as cursor:
            for index, statement in enumerate(statements):
                last = index == len(statements) - 1
                cursor.execute(statement, args if last else None)
                rows = list(cursor.fetchall())
        return rows

    def create_user(self, user: str, password: str, privileges: Sequence[str] = ()) -> None:
        """Create ``user``@127.0.0.1 with global ``privileges``, on this server only.

        The statements are kept out of the binary log, so the same user may
        be created on a master and on its replicas without breaking
        replication. On MariaDB 10.11, ``SHOW REPLICA STATUS`` needs
        ``SLAVE MONITOR`` (alias ``REPLICA MONITOR``) or ``SUPER``:
        ``REPLICATION CLIENT`` now means ``BINLOG MONITOR`` and is not enough.
        """
        statements = [
            "SET SESSION sql_log_bin = 0",
            f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY %s",
        ]
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(statements[0])
            cursor.execute(statements[1], (password,))
            if privileges:
                cursor.execute(f"GRANT {', '.join(privileges)} ON *.* TO '{user}'@'127.0.0.1'")

    # -- replication -------------------------------------------------------------

    def enable_replication_source(self) -> None:
        """Create the replication user on this (master) server, unless it exists."""
        exists = self.sql(
            "SELECT 1 AS x FROM mysql.user WHERE user = %s AND host = '127.0.0.1'",
            args=(REPL_USER,),
        )
        if not exists:
            self.create_user(REPL_USER, REPL_PASSWORD, ["REPLICATION SLAVE"])

    def replicate_from(self, master: MariaDBServer, *, deadline: float = START_DEADLINE) -> None:
        """Make this server a replica of ``master`` (GTID) and wait until it runs."""
        master.enable_replication_source()
        self.sql(
            "STOP SLAVE",
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', "
            f"MASTER_PORT = {master.port}, MASTER_USER = '{REPL_USER}', "
            f"MASTER_PASSWORD = '{REPL_PASSWORD}', MASTER_USE_GTID = slave_pos, "
            "MASTER_CONNECT_RETRY = 1",
            "START SLAVE",
        )
        self.wait_replicating(deadline=deadline)

    def replica_status(self) -> dict[str, Any] | None:
        """The row of ``SHOW REPLICA STATUS`` (None when not a replica)."""
        rows = self.sql("SHOW REPLICA STATUS")
        return rows[0] if rows else None

    def wait_replicating(self, *, deadline: float = START_DEADLINE) -> None:
        """Poll until both replication threads run and the delay is known."""
        give_up = time.monotonic() + deadline
        status: dict[str, Any] | None = None
        while time.monotonic() < give_up:
            status = self.replica_status()
            if (
                status is not None
                and status.get("Slave_IO_Running") == "Yes"
                and status.get("Slave_SQL_Running") == "Yes"
                and status.get("Seconds_Behind_Master") is not None
            ):
                return
            time.sleep(0.02)  # bounded poll of a condition
        raise MariaDBError(f"{self.name} is not replicating after {deadline:g} s: {status}")

    def wait_caught_up(self, master: MariaDBServer, *, deadline: float = START_DEADLINE) -> None:
        """Poll until this replica has applied everything ``master`` has logged."""
        position = master.sql("SELECT @@gtid_binlog_pos AS pos")[0]["pos"]
        rows = self.sql("SELECT MASTER_GTID_WAIT(%s, %s) AS result", args=(position, deadline))
        if rows[0]["result"] != 0:
            raise MariaDBError(f"{self.name} did not reach {position} in {deadline:g} s")

    def stop_sql_thread(self) -> None:
        """Stop applying events (the IO thread keeps fetching): ``not-replicating``."""
        self.sql("STOP SLAVE SQL_THREAD")

    def start_sql_thread(self) -> None:
        """Resume applying events."""
        self.sql("START SLAVE SQL_THREAD")

    def set_master_delay(self, seconds: int) -> None:
        """Make this a delayed replica (``MASTER_DELAY``); replication restarts."""
        self.sql("STOP SLAVE", f"CHANGE MASTER TO MASTER_DELAY = {int(seconds)}", "START SLAVE")

    def reset_replication(self) -> None:
        """Stop replicating and forget the master (``replica-none`` from then on)."""
        self.sql("STOP SLAVE", "RESET SLAVE ALL")


def make_lagging(master: MariaDBServer, replica: MariaDBServer, lag_seconds: int) -> None:
    """Make ``replica`` report about ``lag_seconds`` behind, at once.

    ``Seconds_Behind_Master`` is the age of the event the SQL thread is on.
    A delayed replica (``MASTER_DELAY`` well above the lag) holds back an
    event the master wrote with a back-dated ``TIMESTAMP``, so the replica
    shows the full lag immediately and keeps it; no real waiting.
    """
    master.sql(
        "CREATE DATABASE IF NOT EXISTS relay_lag",
        "CREATE TABLE IF NOT EXISTS relay_lag.tick (id INT AUTO_INCREMENT PRIMARY KEY)",
    )
    # Everything written so far reaches the replica before the delay starts,
    # so only the back-dated insert below is held back.
    replica.wait_caught_up(master)
    replica.set_master_delay(int(lag_seconds) * 2 + 3600)
    master.sql(
        f"SET TIMESTAMP = UNIX_TIMESTAMP() - {int(lag_seconds)}",
        "INSERT INTO relay_lag.tick () VALUES ()",
    )


class MariaDBFactory:
    """Creates servers under one directory and tears all of them down at once."""

    def __init__(self, root: Path, template: Path) -> None:
        """Servers live under ``root``; data directories are copied from ``template``."""
        self.root = root
        self.template = template
        self.servers: list[MariaDBServer] = []

    def create(self, name: str, *, server_id: int) -> MariaDBServer:
        """A server object, not yet started."""
        server = MariaDBServer(
            name=name, basedir=self.root / name, server_id=server_id, template=self.template
        )
        self.servers.append(server)
        return server

    def start(self, name: str, *, server_id: int) -> MariaDBServer:
        """Create and start a server, ready for connections."""
        server = self.create(name, server_id=server_id)
        server.start()
        return server

    def close(self) -> None:
        """Kill every server (their data is thrown away) and remove their files."""
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.kill()
        for server in self.servers:
            shutil.rmtree(server.basedir, ignore_errors=True)
        self.servers.clear()
