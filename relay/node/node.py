"""A relay node's lifecycle: start its parts and listeners in order, stop them in reverse.

``relay.node.runtime`` runs a ``Node`` in the process (adding signals,
reloads and systemd notifications); tests start a ``Node`` directly and
read back the ports the OS picked. The parts are built in
``relay.node.parts``, a reload is applied by ``relay.node.reload``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence

from relay import __version__
from relay.config import Config, ServerConfig
from relay.config.secrets import load_secret
from relay.core.snapshot import NodeSnapshot, ProcessReading
from relay.listeners.admin import AdminSettings, AdminState
from relay.listeners.browser import BrowserConnection, ConnectionFactory
from relay.listeners.client_listener import ClientListener
from relay.listeners.drain import DrainPlan, drain
from relay.node import reload
from relay.node.admin_listeners import AdminListeners, WaitingConnection
from relay.node.parts import Parts, new_monitor
from relay.node.presence import new_alerts, new_presence
from relay.node.stop_watch import StopWatch
from relay.node.worker_figures import metrics_of, node_snapshot, status_of
from relay.observe.dashboard import asset, render_page
from relay.observe.metrics import NodeMetrics
from relay.observe.node_status import status_message
from relay.peering.presence import MeshPresence
from relay.process.binding import bound
from relay.process.periodic import every
from relay.workers.plan import WorkerRole
from relay.workers.siblings import Siblings

log = logging.getLogger("relay.node")

#: How often expired history is dropped when nothing else touches it.
HOUSEKEEPING_INTERVAL = 1.0
#: How long shutdown waits for browsers to acknowledge 1001 and for in-flight POSTs.
SHUTDOWN_GRACE = 2.0
#: How long shutdown lets queued messages reach peers that are up.
PEER_DRAIN_GRACE = 1.0


class Node:
    """One relay node: its hub and its client and admin listeners."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.monotonic,
        connection_factory: ConnectionFactory = BrowserConnection,
        role: WorkerRole | None = None,
    ) -> None:
        """Build the node for ``config``; nothing listens until ``start``.

        ``connection_factory`` builds each browser connection (a test harness
        may give a subclass of ``BrowserConnection``). With a ``role`` this
        process is one worker of a node: it shares the node's ports with its
        siblings and answers ``/status/`` and ``/metrics`` for all of them.

        Raises:
            StartupError: the admin secret file cannot be read.
        """
        self.config = config
        self.role = role
        self._clock = clock
        #: Wall-clock start, for ``/status/``: which code has run since when, after an upgrade.
        self.started_at = time.time()
        #: Browser connections this process took over from its predecessor.
        self.adopted = 0
        self._connection_factory = connection_factory
        secret = load_secret(config.admin)
        parts = self._parts = Parts.build(config, secret, clock)
        self.hub, self.peers, self.broker = parts.hub, parts.peers, parts.broker
        #: The last minutes, for the status page's charts.
        self.series = parts.series
        self.status_monitor = new_monitor(config.cluster_status, parts.hub, parts.broker)
        self.presence = new_presence(
            config,
            self.peers,
            self.hub.fingerprint,
            snapshot=self.snapshot,
            role=role,
            address=self._address,
        )
        # In broker mode the cluster-status lease holder speaks for the cluster.
        self.alerts = new_alerts(
            config,
            self.hub.fingerprint,
            snapshot=self.snapshot,
            speaks=lambda: self.status_monitor is None or self.status_monitor.speaks_for_cluster,
            presence=self.presence,
        )
        self.client_listeners: list[ClientListener] = []
        #: Whether the node serves (``/health/ready``): not until every listener
        #: is up, and no longer once shutdown begins.
        self.ready = False
        self._admin_settings = AdminSettings.of(config.limits, config.admin, secret)
        # After all that snapshot() reads: the registry collects once while registering.
        self.metrics = NodeMetrics(self.snapshot)
        self.siblings = None if role is None else self._new_siblings(role, clock)
        self.admin_state = self._new_admin_state()
        self.admin = AdminListeners(self.admin_state, parts.tls, reuse_port=role is not None)
        self._background: list[asyncio.Task[None]] = []
        #: Set by ``hurry``: the drain closes every remaining browser at once.
        self._hurry = asyncio.Event()

    def _new_siblings(self, role: WorkerRole, clock: Callable[[], float]) -> Siblings:
        """This worker's view of the node's other workers."""
        latency, recent = self.metrics.latency, self._parts.series.recent_latencies
        return Siblings(role, snapshot=self.snapshot, latency=latency, recent=recent, clock=clock)

    def _new_admin_state(self) -> AdminState:
        """What the admin handlers read, complete: what changes is read through callables."""
        siblings = self.siblings
        return AdminState(
            hub=self.hub,
            settings=lambda: self._admin_settings,
            snapshot=self.snapshot,
            ready=lambda: self.ready,
            dashboard=self._dashboard_page,
            dashboard_enabled=lambda: self.config.dashboard.enabled,
            dashboard_file=asset,
            render_metrics=self.metrics.render,
            observe_latency=self._observe_latency,
            overload=self._parts.overload,
            congested=self.peers.congested,
            node_status=None if siblings is None else status_of(siblings),
            node_metrics=None if siblings is None else metrics_of(siblings),
            placed=None if self.broker is None else self.broker.placed,
            heard=self.presence.heard if isinstance(self.presence, MeshPresence) else None,
        )

    async def start(
        self, client_sockets: Sequence[socket.socket | None] = (), *, admin_later: bool = False
    ) -> None:
        """Start the client listeners, then the admin listeners.

        A process taking over from another (``relay.node.handoff``) passes the
        client listening sockets it was given, in config order, and starts the
        admin listeners later (``start_admin``), on the sockets it is given last.

        Raises:
            StartupError: a listener could not start; whatever had started is stopped.
        """
        log.info("starting relay node %s", self.hub.fingerprint)
        try:
            if self.siblings is not None:
                await self.siblings.start()
            if self.broker is not None:
                if self.peers.links:
                    # The migration rule of relay.links.forwarding is in force.
                    peers = len(self.peers.links)
                    log.info(
                        "broker mode with %d cluster %s: what application servers post "
                        "here also goes to %s (a migration from an Aphlict mesh)",
                        peers,
                        "peer" if peers == 1 else "peers",
                        "it" if peers == 1 else "them",
                    )
                # Before any browser connects: the cluster's history is reloaded
                # first, unless Redis is away (then it is at most this late).
                await self.broker.start(self.hub)
            given = iter(client_sockets)
            for index, server in self._servers("client"):
                await self._start_client(server, index, next(given, None))
            if not admin_later:
                await self.start_admin()
            await self.peers.start()
            # Once the admin port is bound (it names the node in its
            # announcements) and the peer links are there to carry them.
            if self.presence is not None:
                await self.presence.start()
            if self.status_monitor is not None:
                await self.status_monitor.start()
            if self.alerts is not None:
                await self.alerts.start()
        except BaseException:
            await self.stop()
            raise
        self._background = self._start_background()
        self.ready = True

    def _start_background(self) -> list[asyncio.Task[None]]:
        """History expiry, and the status page's announcements (while the page is enabled)."""
        housekeeping = every(
            lambda: HOUSEKEEPING_INTERVAL, self.hub.expire, doing="expiring history", log=log
        )
        announcing = every(
            lambda: self.config.dashboard.interval_seconds,
            self._announce,
            doing="announcing the node status",
            log=log,
            first_now=True,
        )
        return [
            asyncio.create_task(housekeeping, name="relay-housekeeping"),
            asyncio.create_task(announcing, name="relay-node-status"),
        ]

    async def stop(self) -> None:
        """Drain the browsers, then stop accepting posts and release everything.

        Readiness turns 503 and new browsers get 503 at once; the connected
        ones are closed with 1001 spread over ``shutdown.drain_seconds``
        while messages still reach those not closed yet; then the listeners
        and peers stop as before.
        """
        self.ready = False
        started = asyncio.get_running_loop().time()
        await self._drain()
        watch = StopWatch(started)  # from here on every step is bounded: say which one overruns
        try:
            await self._stop_parts(watch)
        finally:
            watch.close()
        log.info("relay node %s stopped", self.hub.fingerprint)

    async def _stop_parts(self, watch: StopWatch) -> None:
        """Stop everything but the browsers (drained already), each step named for ``watch``."""
        if self.alerts is not None:
            await watch.step("alerts", self.alerts.stop())
        if self.status_monitor is not None:
            await watch.step("cluster-status monitor", self.status_monitor.stop())
        background, self._background = self._background, []
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch.step(f"background task {task.get_name()}", task)
        # Admin and client listeners wind down together (each within the
        # grace), then peers drain: at most 3 s after the drain.
        await watch.step(
            "admin and client listeners",
            asyncio.gather(
                self.admin.stop(),
                *(listener.stop(SHUTDOWN_GRACE) for listener in self.client_listeners),
            ),
        )
        self.client_listeners.clear()
        await watch.step(
            "presence, peers and broker",
            asyncio.gather(
                *([self.presence.stop()] if self.presence is not None else []),
                self.peers.stop(PEER_DRAIN_GRACE),
                *([self.broker.stop(PEER_DRAIN_GRACE)] if self.broker is not None else []),
            ),
        )
        if self.siblings is not None:
            await watch.step("siblings' socket", self.siblings.stop())

    async def start_admin(
        self,
        sockets: Sequence[socket.socket | None] = (),
        waiting: Sequence[WaitingConnection] = (),
    ) -> None:
        """Start the admin listeners: bound as configured, or on ``sockets`` (config order).

        Then serve ``waiting``: admin connections a process handing over had
        accepted and read nothing of. They are this method's from the call on
        (closed if they cannot be served); the caller closes none of them.

        Raises:
            StartupError: a listener could not start.
        """
        try:
            await self.admin.start(
                self._servers("admin"), self.config.limits, sockets, grace=SHUTDOWN_GRACE
            )
        except BaseException:
            for connection in waiting:
                connection.sock.close()
            raise
        await self.admin.serve(waiting)

    def admin_sockets(self) -> list[socket.socket]:
        """The admin listeners' listening sockets, in config order (for a handoff)."""
        return self.admin.sockets()

    async def take_waiting_admin(self) -> list[WaitingConnection]:
        """Stop accepting admin connections; take out those read nothing of (a handoff's)."""
        await self.admin.stop_accepting()
        return self.admin.take_untouched()

    async def close_admin(self) -> None:
        """Stop the admin listeners for a successor, cutting no request off."""
        await self.admin.hand_over(self.config.limits.admin_header_seconds)

    def hurry(self) -> None:
        """Cut a drain under way short: close every remaining browser now."""
        self._hurry.set()

    async def _drain(self) -> None:
        """Refuse new browsers, then close the connected ones spread over the window."""
        for listener in self.client_listeners:
            listener.draining = True
        connections = [c for listener in self.client_listeners for c in listener.connections()]
        if not connections:
            return
        policy = self.config.shutdown
        plan = DrainPlan.spread(len(connections), policy.drain_seconds, policy.drain_min_rate)
        log.info(
            "draining: closing %d browser %s over %.1f s",
            plan.count,
            "connection" if plan.count == 1 else "connections",
            plan.duration,
        )
        await drain(connections, plan, hurry=self._hurry)

    @property
    def client_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of each client listener, in config order."""
        return [listener.address for listener in self.client_listeners]

    @property
    def admin_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of each admin listener, in config order."""
        return self.admin.addresses

    async def _start_client(
        self, server: ServerConfig, index: str, sock: socket.socket | None
    ) -> None:
        listener = ClientListener(
            self.hub,
            server,
            limits=self.config.limits,
            browsers=self.config.browsers,
            admission=self._parts.admission,
            ssl_context=self._parts.tls.context_for(server, index),
            connection_factory=self._connection_factory,
            reuse_port=self.role is not None,
        )
        await bound(listener.start(sock), server, index)
        self.client_listeners.append(listener)

    async def apply(self, config: Config) -> list[str]:
        """Apply a new configuration to the running node, keeping every connection.

        What takes effect at once and what waits for a restart is in
        ``relay.node.reload``. Returns a note for each setting that only a
        restart changes and that changed (it was kept as it was).

        Raises:
            StartupError: a secret or certificate file cannot be read; nothing
                was changed.
        """
        change = reload.prepare(self.config, config, self._parts.tls)
        self.config, self._admin_settings = config, change.admin
        await reload.apply(change, self._parts, self.client_listeners)
        self.status_monitor = await reload.renew_monitor(
            change, self.status_monitor, self.hub, self.broker
        )
        return change.notes

    def _servers(self, kind: str) -> list[tuple[str, ServerConfig]]:
        return [
            (f"servers[{index}]", server)
            for index, server in enumerate(self.config.servers)
            if server.type == kind
        ]

    def snapshot(self) -> NodeSnapshot:
        """What this node knows now, for metrics, the status page and ``/status/``."""
        hub = self.hub
        rejected: Counter[str] = Counter()
        for listener in self.client_listeners:
            rejected.update(listener.rejected)
        return NodeSnapshot(
            fingerprint=hub.fingerprint,
            uptime_ms=hub.uptime_ms(),
            connections=self._connection_count(),
            rejected=dict(rejected),
            subscriptions=hub.subscription_count(),
            instances=hub.readings(),
            peers=self.peers.readings(),
            cluster_status=None if self.status_monitor is None else self.status_monitor.reading(),
            broker=None if self.broker is None else self.broker.reading(),
            overload=self._parts.overload.reading(),
            instances_overflowed=hub.overflowed,
            alerts=None if self.alerts is None else self.alerts.reading(),
            nodes=None if self.presence is None else self.presence.status(),
            process=ProcessReading(__version__, self.started_at, os.getpid(), self.adopted),
            history_bytes=hub.history_bytes,
        )

    def _address(self) -> str:
        """Where this node is, ``host:port`` of its first admin listener: a restart keeps it.

        The port bound, or before the listener is (a handoff binds it last)
        the configured one.
        """
        bound = self.admin_addresses
        configured = [server.port for _, server in self._servers("admin")]
        port = bound[0][1] if bound else next(iter(configured), 0)
        return f"{socket.gethostname()}:{port}"

    def _connection_count(self) -> int:
        """Browsers connected to this node (this worker) now, over every client listener."""
        return sum(listener.connection_count for listener in self.client_listeners)

    def _dashboard_page(self, host: str) -> bytes | None:
        """The live status page for ``host``, pointed at the first client listener.

        None while the page is disabled.
        """
        config = self.config
        if not config.dashboard.enabled:
            return None
        status = config.cluster_status
        return render_page(
            host,
            client_port=self.client_addresses[0][1],
            tls=config.listeners("client")[0].uses_tls,
            dashboard=config.dashboard,
            # The keys the cluster-status module announces on (none when it is off).
            status_keys={}
            if status is None
            else {"databases": status.keys.databases, "repositories": status.keys.repositories},
            series=self._parts.series.columns(),
            now=self._clock(),
            uptime_ms=self.hub.uptime_ms() if self.siblings is None else self.siblings.uptime_ms(),
        )

    def _observe_latency(self, seconds: float, reached: bool) -> None:
        """One POST's delivery latency: for Prometheus, and for the charts if it reached a browser.

        A post no browser here listens to says nothing about delivery, so the
        page's latency figure leaves it out; Prometheus' histogram keeps
        counting every POST, as documented.
        """
        self.metrics.delivery_latency.observe(seconds)
        if reached:
            self._parts.series.observe_latency(seconds)

    async def _announce(self) -> None:
        """Sample the node for the charts and announce its status to the page (one round).

        A worker samples the whole node (its siblings' readings added up),
        the latencies of the posts every worker took included.
        """
        dashboard = self.config.dashboard
        if dashboard.enabled:
            snapshot, others = await node_snapshot(self.siblings, self.snapshot)
            sample = self._parts.series.sample(snapshot, others)
            self.hub.announce(dashboard.instance, status_message(snapshot, dashboard.key, sample))
