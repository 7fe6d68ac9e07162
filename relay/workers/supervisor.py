"""The supervisor of a multi-process node: starts the workers, restarts them, speaks for the node.

It serves nothing itself. It reserves the node's ports (``ports.py``), writes
the plan into a private run directory, and starts ``relay serve`` once per
worker slot, forked from a template process that imported its code
(``spawn.py``). Each worker tells it its state over the sd_notify protocol on a
datagram socket of its own (``READY=1``, ``WATCHDOG=1``...), so a worker
needs no code of its own for it: the supervisor is to its workers what
systemd is to the supervisor. It tells systemd ``READY=1`` once every worker
serves, forwards SIGHUP (a reload) to every worker and reports ``READY=1``
again once all of them have reloaded (a reload and a SIGUSR2 roll take turns,
each told to systemd: ``relay.workers.changes``), and on SIGTERM stops them all. A
worker that dies, or hangs (stops pinging its watchdog), is restarted with
a backoff; the others never stop serving. On SIGUSR2 it replaces its workers
in turn with the code installed now, disconnecting no one
(``relay.workers.roll``); it keeps running its own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from relay.config import Config
from relay.config.hosts import base_url
from relay.errors import StartupError
from relay.links.backoff import RetryDelays
from relay.workers.changes import Changes, ServiceManager
from relay.workers.plan import NodePlan, notify_socket
from relay.workers.ports import PortReservation
from relay.workers.roll import take_over_seconds
from relay.workers.slot import Slot, WorkerProcess
from relay.workers.spawn import Spawner

log = logging.getLogger("relay.workers")

#: Time all workers get to report ready when the node starts.
START_TIMEOUT = 30.0
#: Time workers get to stop (browsers closed with 1001) before they are killed.
STOP_GRACE = 10.0
#: A worker whose event loop has not pinged for this long is hung: it is killed.
WORKER_WATCHDOG = 10.0
#: Restart delays: the first restart is at once, repeated deaths back off to the max.
RESTART_INITIAL = 0.1
RESTART_MAX = 5.0
#: A worker that served this long before dying is restarted without delay again.
STABLE_SECONDS = 30.0


class Supervisor:
    """Runs ``count`` workers of the node configured in ``path``."""

    def __init__(
        self,
        config: Config,
        path: str,
        *,
        count: int,
        systemd: ServiceManager,
        backoff: Callable[[float, float], RetryDelays],
        debug: bool = False,
        clock: Callable[[], float] = time.monotonic,
        python: str = sys.executable,
        watchdog: float = WORKER_WATCHDOG,
    ) -> None:
        """Prepare to supervise; nothing starts until ``run``.

        ``watchdog``: seconds a serving worker may go without pinging before
        it is taken for hung and killed.
        """
        self.config = config
        self._watchdog = watchdog
        self.count = count
        self._path = path
        self._debug = debug
        self._systemd = systemd
        self._clock = clock
        self._python = python
        self._slots = [Slot(index, backoff(RESTART_INITIAL, RESTART_MAX)) for index in range(count)]
        self._ports = PortReservation()
        self._plan: NodePlan | None = None
        self._directory: Path | None = None
        self._stopping = False
        #: Set once every worker has served (the node is ready), and stays set.
        self.up = asyncio.Event()
        self._failure: StartupError | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sockets: list[socket.socket] = []
        # Reloads and upgrades, in turn (each watches the slots' READY=1).
        self._changes = Changes(
            self._slots,
            systemd,
            self.describe,
            self._start_worker,
            clock,
            take_over_seconds(config.limits),
        )
        self._spawner: Spawner | None = None

    @property
    def pids(self) -> list[int | None]:
        """The pid of each slot's current worker (None while it restarts)."""
        return [
            slot.process.pid if slot.process and slot.process.returncode is None else None
            for slot in self._slots
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Start every worker, keep them running until ``stop`` is set, then stop them.

        Raises:
            StartupError: a port cannot be had, or a worker failed before the
                node was ready; every worker that had started is stopped.
        """
        self._stop = stop
        try:
            await self._start()
            waiting = asyncio.ensure_future(self.up.wait())
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait(
                    {waiting, stopped}, timeout=START_TIMEOUT, return_when="FIRST_COMPLETED"
                )
            finally:
                waiting.cancel()
                stopped.cancel()
            if self._failure is not None:
                raise self._failure
            if not self.up.is_set() and not stop.is_set():
                raise StartupError(f"workers: not every worker was ready within {START_TIMEOUT} s")
            if self.up.is_set():
                self._announce_ready()
                self._background(self._watch(), "relay-workers-watchdog")
                await stop.wait()
        finally:
            await self._shutdown()

    def reload(self) -> None:
        """Forward a reload (SIGHUP) to every worker; report ready once all have reloaded."""
        if self.up.is_set() and not self._stopping:
            self._background(self._changes.reload(), "relay-workers-reload")

    def upgrade(self) -> None:
        """SIGUSR2: replace each worker in turn with the code installed now (``workers.roll``)."""
        if not self.up.is_set() or self._stopping:
            log.warning("received SIGUSR2 before the node serves or while it stops; ignored")
        elif self._changes.wants_roll():
            self._background(self._upgrade(), "relay-workers-upgrade")

    async def _upgrade(self) -> None:
        assert self._spawner is not None
        try:
            await self._spawner.renew()  # the successors fork from the code on disk now
        finally:
            await self._changes.roll()  # after wants_roll(), always: it ends the turn

    def describe(self) -> str:
        """The node's addresses, as systemd's status line and the ready log line give them."""
        assert self._plan is not None
        parts: dict[str, list[str]] = {"client": [], "admin": []}
        for server, port in zip(self.config.servers, self._plan.ports, strict=True):
            scheme = {"client": "ws", "admin": "http"}[server.type] + (
                "s" if server.uses_tls else ""
            )
            parts[server.type].append(base_url(scheme, server.bind_host, port))
        return (
            f"{self.count} workers serving browsers on {', '.join(parts['client'])}; "
            f"admin on {', '.join(parts['admin'])}"
        )

    # Start and stop.

    async def _start(self) -> None:
        ports = self._ports.reserve(self.config.servers)
        self._directory = Path(tempfile.mkdtemp(prefix="relay-workers-"))
        self._plan = NodePlan(self.count, ports, self._clock())
        self._plan.write(self._directory)
        self._spawner = Spawner(
            self._python, self._path, self._directory, debug=self._debug, watchdog=self._watchdog
        )
        loop = asyncio.get_running_loop()
        for slot in self._slots:
            # A plain socket and a reader: uvloop has no unix datagram endpoints.
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(notify_socket(self._directory, slot.index)))
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._receive, sock, slot)
            self._sockets.append(sock)
        for slot in self._slots:
            await self._spawn(slot)
            self._background(self._keep(slot), f"relay-worker-{slot.index}")
        log.info("started %d workers; waiting until each serves", self.count)

    async def _shutdown(self) -> None:
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        running = [
            process
            for slot in self._slots
            # A successor taking a worker over when the node stops is stopped too.
            for process in (slot.process, slot.successor)
            if process is not None and process.returncode is None
        ]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE)
            except TimeoutError:
                log.warning(
                    "worker pid %d did not stop in %.0f s; killing it", process.pid, STOP_GRACE
                )
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._spawner is not None:
            await self._spawner.close()
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()
        self._ports.release()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
        if running:
            log.info("all workers stopped")

    # Workers.

    async def _spawn(self, slot: Slot) -> None:
        slot.ready = False
        slot.readied.clear()
        slot.started_at = slot.last_ping = self._clock()
        slot.process = await self._start_worker(slot)
        log.info("worker %d started as pid %d", slot.index, slot.process.pid)

    async def _start_worker(self, slot: Slot, *, take_over: bool = False) -> WorkerProcess:
        """Start ``relay serve`` for ``slot``: its worker, or (``take_over``) its successor."""
        assert self._spawner is not None
        return await self._spawner.start(slot, take_over=take_over)

    async def _keep(self, slot: Slot) -> None:
        """Wait for the slot's worker to end; restart it (unless the node is stopping)."""
        while True:
            process = slot.process
            assert process is not None
            code = await process.wait()
            if slot.rolling is not None:
                await asyncio.shield(slot.rolling)  # the roll settles whose the slot is
            if slot.process is not process:
                continue  # it handed over to its successor, watched from now on
            slot.ready = False
            if self._stopping or (self._stop is not None and self._stop.is_set()):
                return  # stopping: a Ctrl-C reaches the workers as soon as the supervisor
            how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with {code}"
            if not self.up.is_set():
                self._failure = StartupError(
                    f"worker {slot.index} {how} before the node was ready; see its log above"
                )
                assert self._stop is not None
                self._stop.set()
                return
            if self._clock() - slot.started_at >= STABLE_SECONDS:
                slot.backoff.reset()
            delay = slot.backoff.next_delay()
            log.warning(
                "worker %d (pid %d) %s; restarting it in %.1f s",
                slot.index,
                slot.process.pid,
                how,
                delay,
            )
            self._systemd.notify(f"STATUS=worker {slot.index} {how}; restarting it")
            await asyncio.sleep(delay)
            slot.generation += 1
            await self._spawn(slot)

    def _receive(self, sock: socket.socket, slot: Slot) -> None:
        """Read the sd_notify datagrams waiting on a worker's socket."""
        while True:
            try:
                data = sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("reading worker %d's notifications failed: %s", slot.index, exc)
                return
            for line in data.decode("utf-8", "replace").splitlines():
                self.notice(slot, line.strip())

    def notice(self, slot: Slot, line: str) -> None:
        """One sd_notify assignment from the slot's worker."""
        if line != "WATCHDOG=1":
            log.debug("worker %d says %s", slot.index, line)
        now = self._clock()
        if line == "READY=1":
            slot.last_ping = now
            again = slot.generation > 0 and not slot.ready and self.up.is_set()
            slot.ready = True
            slot.readied.set()
            if again:
                log.info("worker %d (pid %d) serves again", slot.index, self._pid(slot))
                self._systemd.notify(f"STATUS={self.describe()}")
            if all(s.ready for s in self._slots):
                self.up.set()
        elif line.startswith("MAINPID="):
            with contextlib.suppress(ValueError):
                slot.main_pid = int(line.removeprefix("MAINPID="))
        elif line == "WATCHDOG=1":
            slot.last_ping = now
        elif line == "STOPPING=1":
            slot.ready = False

    def _announce_ready(self) -> None:
        description = self.describe()
        log.info("relay node ready: %s", description)
        self._systemd.ready(description)

    async def _watch(self) -> None:
        """Kill hung workers; ping systemd's watchdog while the supervisor runs."""
        interval = self._watchdog / 4
        if self._systemd.watchdog_interval is not None:
            interval = min(interval, self._systemd.watchdog_interval)
        while True:
            self._systemd.watchdog()
            now = self._clock()
            for slot in self._slots:
                process = slot.process
                silent = now - slot.last_ping
                if slot.ready and process is not None and silent > self._watchdog:
                    log.error(
                        "worker %d (pid %d) has not pinged its watchdog for %.0f s; killing it",
                        slot.index,
                        process.pid,
                        silent,
                    )
                    slot.ready = False
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.sleep(interval)

    def _background(self, work: object, name: str) -> None:
        task = asyncio.ensure_future(work)  # type: ignore[call-overload]
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("supervisor task %s failed", task.get_name(), exc_info=task.exception())
            if self._stop is not None:
                self._stop.set()

    @staticmethod
    def _pid(slot: Slot) -> int:
        return slot.process.pid if slot.process is not None else 0


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
