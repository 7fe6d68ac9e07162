"""A relay node's lifecycle: build the hub, start listeners in order, stop them in reverse.

``serve(config, shutdown_trigger=...)`` is the whole server as one awaitable
(the CLI runs it, adding signals, reloads and systemd notifications);
the CLI adds signals and the event loop, tests start a ``Node`` directly and
read back the ports the OS picked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial

from aiohttp import web

from relay.broker.link import Broker
from relay.cluster_status.monitor import ClusterStatusMonitor
from relay.config import Config, ServerConfig
from relay.config.secrets import load_secret
from relay.config.tls import ListenerContexts
from relay.core.admission import Admission
from relay.core.dedup import RecentIds
from relay.core.fingerprint import new_fingerprint
from relay.core.history import History
from relay.core.hub import Hub
from relay.core.snapshot import NodeSnapshot
from relay.errors import StartupError
from relay.links.backoff import Backoff
from relay.links.forwarding import forward_for
from relay.links.overload import OverloadGuard
from relay.listeners.admin import HTTP_LOG, AdminSettings, AdminState, create_admin_app
from relay.listeners.binding import listen_problem
from relay.listeners.browser import BrowserConnection, ConnectionFactory
from relay.listeners.client_listener import ClientListener
from relay.listeners.drain import DrainPlan, drain
from relay.observe.dashboard import render_page
from relay.observe.metrics import NodeMetrics
from relay.observe.node_status import status_message
from relay.observe.timeseries import TimeSeries, capacity_for
from relay.peering.peers import PeerSet, peer_tls_context
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
#: Upper bound on remembered message identities (about 100 bytes each).
RECENT_IDS_CAPACITY = 200_000


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
        """
        self.config = config
        self.role = role
        self._connection_factory = connection_factory
        history = self._history = History(
            config.history.max_messages, config.history.max_age_seconds, clock
        )
        # Remember identities at least as long as history keeps messages, so a
        # late copy never gets delivered next to the original.
        recent = self._recent = RecentIds(_dedup_window(config), RECENT_IDS_CAPACITY, clock)
        fingerprint = new_fingerprint()
        self._secret = load_secret(config.admin)
        self.peers = PeerSet(
            config.cluster, config.peering, fingerprint, secret=self._secret, clock=clock
        )
        self._clock = clock
        self.broker = self._new_broker(config, fingerprint, clock)
        self.hub = Hub(
            fingerprint=fingerprint,
            history=history,
            recent=recent,
            clock=clock,
            limits=config.limits,
            forward=forward_for(
                self.peers.forward, None if self.broker is None else self.broker.publish
            ),
        )
        self.admission = Admission(
            config.limits.max_connections, config.limits.max_connections_per_ip
        )
        self.client_listeners: list[ClientListener] = []
        # The listeners' TLS contexts, which a reload renews.
        self._tls = ListenerContexts()
        self.status_monitor = self._new_monitor(config)
        self.overload = OverloadGuard(config.peering.when_full)
        # After all that snapshot() reads: the registry collects once while registering.
        self.metrics = NodeMetrics(self.snapshot)
        #: The last minutes, for the status page's charts.
        self.series = TimeSeries(clock, _chart_capacity(config))
        self._announcing: asyncio.Task[None] | None = None
        self._admin_runners: list[web.AppRunner] = []
        self._housekeeping: asyncio.Task[None] | None = None
        #: Set by ``hurry``: the drain closes every remaining browser at once.
        self._hurry = asyncio.Event()
        #: Whether the node serves (``/health/ready``): not until every listener
        #: is up, and no longer once shutdown begins.
        self.ready = False
        self._admin_settings = AdminSettings.of(config.limits, config.admin, self._secret)
        self.siblings: Siblings | None = None
        if role is not None:
            self.siblings = Siblings(
                role,
                local_status=lambda instance: self.snapshot().status(instance),
                local_metrics=self.metrics.render,
                connections=self._connection_count,
                fingerprint=fingerprint,
                clock=clock,
            )
        self.admin_state = self._new_admin_state()

    def _new_admin_state(self) -> AdminState:
        """What the admin handlers read, complete: what changes is read through callables."""
        siblings = self.siblings
        return AdminState(
            hub=self.hub,
            settings=lambda: self._admin_settings,
            snapshot=self.snapshot,
            ready=lambda: self.ready,
            dashboard=self._dashboard_page,
            render_metrics=self.metrics.render,
            observe_latency=self._observe_latency,
            overload=self.overload,
            congested=self.peers.congested,
            node_status=None if siblings is None else siblings.status,
            node_metrics=None if siblings is None else siblings.metrics,
        )

    async def start(self) -> None:
        """Start the client listeners, then the admin listeners.

        Raises:
            StartupError: a listener could not start; whatever had started is stopped.
        """
        log.info("starting relay node %s", self.hub.fingerprint)
        try:
            if self.siblings is not None:
                await self.siblings.start()
            broker = self.config.broker
            if self.broker is not None and broker is not None:
                if self.config.cluster:
                    # The migration rule (relay.links.forwarding): say it is in force.
                    peers = len(self.config.cluster)
                    log.info(
                        "broker mode with %d cluster %s: what application servers post "
                        "here also goes to %s (a migration from an Aphlict mesh)",
                        peers,
                        "peer" if peers == 1 else "peers",
                        "it" if peers == 1 else "them",
                    )
                # Before any browser connects: the cluster's history is reloaded
                # first, unless Redis is away (then it is at most this late).
                await self.broker.start(
                    self.hub, wait=broker.connect_timeout_seconds + broker.timeout_seconds
                )
            for index, server in self._servers("client"):
                listener = ClientListener(
                    self.hub,
                    server,
                    limits=self.config.limits,
                    browsers=self.config.browsers,
                    admission=self.admission,
                    ssl_context=self._tls.context_for(server, index),
                    connection_factory=self._connection_factory,
                    reuse_port=self.role is not None,
                )
                await _bind(listener.start(), server, index)
                self.client_listeners.append(listener)
            for index, server in self._servers("admin"):
                await self._start_admin(server, index)
            await self.peers.start()
            if self.status_monitor is not None:
                await self.status_monitor.start()
        except BaseException:
            await self.stop()
            raise
        self._housekeeping = asyncio.create_task(
            every(
                lambda: HOUSEKEEPING_INTERVAL, self.hub.expire, doing="expiring history", log=log
            ),
            name="relay-housekeeping",
        )
        self._announcing = asyncio.create_task(
            every(
                lambda: self.config.dashboard.interval_seconds,
                self._announce,
                doing="announcing the node status",
                log=log,
                first_now=True,
            ),
            name="relay-node-status",
        )
        self.ready = True

    async def stop(self) -> None:
        """Drain the browsers, then stop accepting posts and release everything.

        Readiness turns 503 and new browsers get 503 at once; the connected
        ones are closed with 1001 spread over ``shutdown.drain_seconds``
        while messages still reach those not closed yet; then the listeners
        and peers stop as before.
        """
        self.ready = False
        await self._drain()
        if self.status_monitor is not None:
            await self.status_monitor.stop()
        for task in (self._housekeeping, self._announcing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._housekeeping = self._announcing = None
        # Admin and client listeners wind down together (each within the
        # grace), then peers drain: at most 3 s after the drain.
        await asyncio.gather(
            *(runner.cleanup() for runner in self._admin_runners),
            *(listener.stop(SHUTDOWN_GRACE) for listener in self.client_listeners),
        )
        self._admin_runners.clear()
        self.client_listeners.clear()
        await asyncio.gather(
            self.peers.stop(PEER_DRAIN_GRACE),
            *([self.broker.stop(PEER_DRAIN_GRACE)] if self.broker is not None else []),
        )
        if self.siblings is not None:
            await self.siblings.stop()
        log.info("relay node %s stopped", self.hub.fingerprint)

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
        return [tuple(runner.addresses[0][:2]) for runner in self._admin_runners]

    async def _start_admin(self, server: ServerConfig, index: str) -> None:
        app = create_admin_app(self.admin_state)
        runner = web.AppRunner(
            app,
            access_log=None,
            logger=HTTP_LOG,
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_GRACE,
            # aiohttp closes a connection that has not sent a complete request
            # this long after connecting (slow headers), or after its last one.
            keepalive_timeout=self.config.limits.admin_header_seconds,
        )
        await runner.setup()
        self._admin_runners.append(runner)
        context = self._tls.context_for(server, index)
        site = web.TCPSite(
            runner,
            server.bind_host,
            server.port,
            ssl_context=context,
            reuse_address=True,
            reuse_port=self.role is not None or None,
        )
        await _bind(site.start(), server, index)
        host, port = runner.addresses[0][:2]
        log.info("admin listener ready on %s://%s:%d", "https" if context else "http", host, port)

    async def apply(self, config: Config) -> list[str]:
        """Apply a new configuration to the running node, keeping every connection.

        Limits, history bounds, browser and admin policies, the shared secret
        and the cluster list take effect at once; TLS certificates are re-read.
        Listener addresses and the pidfile only change with a restart: returns
        a note for each such setting that changed and was kept as it was.

        Raises:
            StartupError: a secret or certificate file cannot be read; nothing
                was changed.
        """
        # Everything that can fail is checked before anything changes, so a
        # refused reload leaves the node exactly as it was.
        secret = load_secret(config.admin)
        self._tls.check()
        for index, peer in enumerate(config.cluster):
            peer_tls_context(f"cluster[{index}]", peer, config.peering)
        self._tls.renew()
        notes = []
        if config.servers != self.config.servers:
            notes.append("servers changed: listeners keep their old addresses until a restart")
        if config.pidfile != self.config.pidfile:
            notes.append("pidfile changed: it takes effect at the next start")
        if config.broker != self.config.broker:
            notes.append("broker changed: it takes effect at the next start")
        limits = config.limits
        self.hub.set_limits(limits)
        self._history.resize(config.history.max_messages, config.history.max_age_seconds)
        if self.broker is not None:
            self.broker.configure(config.history, config.limits)
        self._recent.set_window(_dedup_window(config))
        self.series.resize(_chart_capacity(config))
        self.admission.set_caps(limits.max_connections, limits.max_connections_per_ip)
        for listener in self.client_listeners:
            listener.configure(limits, config.browsers)
        self._admin_settings = AdminSettings.of(limits, config.admin, secret)
        await self.peers.reconfigure(config.cluster, config.peering, secret)
        self.overload.policy = config.peering.when_full
        if config.cluster_status != self.config.cluster_status:
            if self.status_monitor is not None:
                await self.status_monitor.stop()
            self.status_monitor = self._new_monitor(config)
            if self.status_monitor is not None:
                await self.status_monitor.start()
        self._secret = secret
        self.config = config
        return notes

    def _servers(self, kind: str) -> list[tuple[str, ServerConfig]]:
        return [
            (f"servers[{index}]", server)
            for index, server in enumerate(self.config.servers)
            if server.type == kind
        ]

    def _status_keys(self) -> dict[str, str]:
        """The keys the cluster-status module announces on (empty when it is off)."""
        status = self.config.cluster_status
        if status is None:
            return {}
        return {"databases": status.keys.databases, "repositories": status.keys.repositories}

    def _new_monitor(self, config: Config) -> ClusterStatusMonitor | None:
        status = config.cluster_status
        if status is None:
            return None
        # Each node reports what it observes itself: status messages are
        # announced to local browsers only, never forwarded to peers.
        return ClusterStatusMonitor(status, partial(self.hub.announce, status.instance))

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
            peers=self.peers.status(),
            cluster_status=None if self.status_monitor is None else self.status_monitor.reading(),
            broker=None if self.broker is None else self.broker.reading(),
            overload=self.overload.reading(),
        )

    def _connection_count(self) -> int:
        """Browsers connected to this node (this worker) now, over every client listener."""
        return sum(listener.connection_count for listener in self.client_listeners)

    def _dashboard_page(self, host: str) -> bytes | None:
        """The live status page for ``host``, pointed at the first client listener.

        None while the page is disabled.
        """
        if not self.config.dashboard.enabled:
            return None
        return render_page(
            host,
            client_port=self.client_addresses[0][1],
            tls=self.config.listeners("client")[0].uses_tls,
            dashboard=self.config.dashboard,
            status_keys=self._status_keys(),
            series=self.series.columns(),
        )

    def _new_broker(
        self, config: Config, fingerprint: str, clock: Callable[[], float]
    ) -> Broker | None:
        if config.broker is None:
            return None
        return Broker(
            config.broker,
            fingerprint,
            backoff=Backoff(
                config.broker.backoff_initial_seconds, config.broker.backoff_max_seconds
            ),
            history=config.history,
            limits=config.limits,
            clock=clock,
        )

    def _observe_latency(self, seconds: float) -> None:
        """One POST's delivery latency: for Prometheus and for the page's charts."""
        self.metrics.delivery_latency.observe(seconds)
        self.series.observe_latency(seconds)

    def _announce(self) -> None:
        """Sample the node for the charts and announce its status to the page (one round)."""
        dashboard = self.config.dashboard
        if dashboard.enabled:
            snapshot = self.snapshot()
            sample = self.series.sample(snapshot)
            self.hub.announce(dashboard.instance, status_message(snapshot, dashboard.key, sample))


def _chart_capacity(config: Config) -> int:
    """Samples for the status page's charts: one per announcement, over the chart window."""
    return capacity_for(config.dashboard.chart_seconds, config.dashboard.interval_seconds)


def _dedup_window(config: Config) -> float:
    """How long message identities are remembered: well past the history window."""
    return max(config.history.max_age_seconds, 60.0) * 2


async def _bind(starting: Awaitable[None], server: ServerConfig, index: str) -> None:
    """Await a listener's start, turning a bind failure into a clear StartupError."""
    try:
        await starting
    except OSError as exc:
        raise StartupError(listen_problem(index, server, exc)) from None


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
