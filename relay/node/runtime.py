"""The process around a serving node: stop signals, reloads on SIGHUP, upgrades on SIGUSR2, systemd.

``relay serve`` runs ``serve_until_signalled`` on the event loop (a node of
several worker processes: ``supervise``, ``relay.node.supervise``, in the
supervisor); these two are the only places that handle signals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from relay.config import Config, load_config
from relay.config.hosts import url_host
from relay.errors import ConfigError, StartupError, problem_lines
from relay.node.handoff_serve import serve_handing_over
from relay.node.node import Node
from relay.node.restart import Restart, serve_restartable
from relay.node.upgrade import Upgrade
from relay.process.collector import freeze_startup_objects
from relay.process.fdstore import FdStore, drop_passed
from relay.process.logs import (
    close_log_files,
    configure_logging,
    open_log_files,
    reopen_log_files,
)
from relay.process.periodic import every
from relay.process.pidfile import PidFile
from relay.process.systemd import Notifier
from relay.workers.plan import WorkerRole

# The CLI's logger: operators' log filters know these lines under that name.
log = logging.getLogger("relay.cli")


async def serve_until_signalled(
    config: Config,
    path: str | None,
    debug: bool,
    role: WorkerRole | None = None,
    handoff: Handoff | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; SIGHUP reloads ``path``. Keeps systemd informed.

    As a worker (``role``), "systemd" is the supervisor, which set ``NOTIFY_SOCKET``.
    With ``handoff``, the node waits for a successor at its socket (and takes
    over from the node there first, if asked): see ``relay.node.handoff``.
    Under systemd with a file descriptor store, a stop keeps the browsers
    there for the next start: see ``relay.node.restart``.
    """
    loop = asyncio.get_running_loop()
    process = _ServingProcess(path, debug, role, handoff)
    # Stop signals first: one that comes while listeners start is honoured.
    loop.add_signal_handler(signal.SIGTERM, process.request_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, process.request_stop, "SIGINT")
    # SIGHUP too: its default action ends the process, and logrotate's HUP finds the
    # pidfile (written before the listeners start) while the node is still starting.
    loop.add_signal_handler(signal.SIGHUP, process.request_reload)
    # Under systemd with a file descriptor store, a restart keeps the browsers there.
    store = FdStore.of() if role is None else None
    if store is None:
        # Else what systemd passed holds the ports this process binds, at every start.
        why = "in a worker" if role is not None else "without $FDSTORE (FileDescriptorStoreMax=)"
        drop_passed(why)
    if handoff is None:
        if store is not None:
            await serve_restartable(
                config, store, shutdown_trigger=process.stop.wait, on_ready=process.started
            )
            return
        await serve(config, shutdown_trigger=process.stop.wait, on_ready=process.started, role=role)
        return
    # A reload hands the browsers over; with a store, a restart keeps them in systemd's.
    restart = None if store is None else Restart(store, process.stop.wait, process.started)
    await serve_handing_over(
        config,
        handoff.path,
        take_over_first=handoff.take_over,
        role=role,
        shutdown_trigger=process.stop.wait if restart is None else restart.stopping,
        on_ready=process.started if restart is None else restart.ready,
        start=Node.start if restart is None else restart.start,
        pidfile=handoff.pidfile,
    )


@dataclass(frozen=True)
class Handoff:
    """``relay serve --handoff-socket PATH [--take-over]``, and the node's pidfile if any.

    The pidfile passes from the old process to its successor with the rest
    (``relay.node.handoff_serve``): taking over, it is not acquired at start.
    """

    path: str
    take_over: bool
    pidfile: PidFile | None = None


class _ServingProcess:
    """The signals' side of one serving node: stop, hurry, reload, watchdog, systemd."""

    def __init__(
        self, path: str | None, debug: bool, role: WorkerRole | None, handoff: Handoff | None
    ) -> None:
        self.stop = asyncio.Event()
        self._handoff = handoff
        self._path = path
        self._debug = debug
        self._role = role
        self._systemd = Notifier()
        self._background: set[asyncio.Task[None]] = set()
        self._running: list[Node] = []
        #: A SIGHUP came before the node served: reload once it does.
        self._reload_waiting = False
        #: Reloads take turns: one that waits for a peer link to drain would
        #: otherwise finish after a later one, and leave its older file's
        #: logging and cluster-status module in force.
        self._reload_turn = asyncio.Lock()

    def request_stop(self, name: str) -> None:
        """SIGTERM or SIGINT: stop; a second one closes the remaining browsers at once."""
        if self.stop.is_set():
            # A second signal: the operator does not want to wait for the drain.
            log.info("received %s again, closing the remaining browsers at once", name)
            for node in self._running:
                node.hurry()
            return
        log.info("received %s, shutting down", name)
        self._systemd.stopping()
        for task in list(self._background):  # no reload or watchdog ping while stopping
            task.cancel()
        self.stop.set()

    def request_reload(self) -> None:
        """SIGHUP: reload the config file; one that comes while the node starts waits for it.

        One that comes while it stops is let go: systemd was told STOPPING=1,
        and a reload would tell it RELOADING=1 and READY=1 again.
        """
        if self.stop.is_set():
            log.info("received SIGHUP while stopping; no reload")
            return
        if not self._running:
            # Applying a config to a half-started node would race with its start.
            log.info("received SIGHUP while starting; the reload follows once the node serves")
            self._reload_waiting = True
            return
        self._in_background(self._reload(self._running[-1]))

    def started(self, node: Node) -> None:
        """The node is up: freeze start-up's objects, take reloads, tell systemd."""
        self._running.append(node)
        frozen = freeze_startup_objects()
        log.debug("froze %d objects of start-up out of the garbage collector's way", frozen)
        systemd = self._systemd
        if self._reload_waiting:  # the file may have changed since it was read for the start
            self._reload_waiting = False
            self._in_background(self._reload(node))
        if systemd.watchdog_interval is not None:
            interval = systemd.watchdog_interval
            self._in_background(
                every(
                    lambda: interval,
                    systemd.watchdog,
                    doing="telling systemd's watchdog",
                    log=log,
                    first_now=True,
                )
            )
        if self._handoff is None:
            systemd.ready(_describe(node))
            return
        if self._role is None:  # a worker's successor is started by its supervisor
            # A successor on SIGUSR2 (systemd's ExecReload): an upgrade that disconnects no one.
            upgrade = Upgrade(sys.argv, systemd, lambda: _describe(node))
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, upgrade.start)
        # Taken over: this process is the service's main process now, for Type=notify
        # (a worker's supervisor tells by it which process of the slot is ready).
        main_pid = os.getpid() if self._handoff.take_over else None
        systemd.ready(_describe(node), main_pid=main_pid)

    async def _reload(self, node: Node) -> None:
        """Reload the config file once the reload under way (if any) has ended."""
        if self._reload_turn.locked():
            log.info("a reload is under way; this one follows once it ends")
        async with self._reload_turn:
            await self._reload_now(node)

    async def _reload_now(self, node: Node) -> None:
        """Reload the config file; a broken one is refused and the running one stays."""
        path, role, systemd = self._path, self._role, self._systemd
        log.info("received SIGHUP, reloading %s", path or "(no config file: reopening logs)")
        if path is None:
            reopen_log_files()
            return
        systemd.reloading()
        files: list[logging.Handler] = []
        try:
            config = load_config(path)
            if role is not None:
                config = role.apply(config)
            # Opened before anything changes: a file that cannot be opened refuses
            # the reload, instead of failing it after the node took the new settings.
            files = open_log_files(config.logs)
            notes = await node.apply(config)
            configure_logging(
                config.logs,
                debug=self._debug,
                log_format=config.log_format,
                worker=None if role is None else role.index,
                files=files,
            )
        except (ConfigError, StartupError) as exc:
            close_log_files(files)
            problems = "; ".join(problem_lines(exc, path))
            log.error("reload refused, the running configuration stays: %s", problems)
        except Exception:
            close_log_files(files)
            log.exception("reload failed; the node keeps serving")
        else:
            for note in notes:
                log.warning("reload: %s", note)
            log.info("configuration reloaded from %s", path)
        finally:
            systemd.ready(_describe(node))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _describe(node: Node) -> str:
    clients = ", ".join(f"{url_host(host)}:{port}" for host, port in node.client_addresses)
    admins = ", ".join(f"{url_host(host)}:{port}" for host, port in node.admin_addresses)
    return f"serving browsers on {clients}, admin on {admins}"


async def serve(
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    on_ready: Callable[[Node], None] | None = None,
    role: WorkerRole | None = None,
) -> None:
    """Run a relay node until ``shutdown_trigger()`` completes, then stop it gracefully.

    ``on_ready(node)`` is called once every listener is up. The trigger is
    only called then too, so nothing is left un-awaited when start fails.

    Raises:
        StartupError: a listener could not start.
    """
    node = Node(config, role=role)
    await node.start()
    try:
        if on_ready is not None:
            on_ready(node)
        await shutdown_trigger()
    finally:
        await node.stop()
