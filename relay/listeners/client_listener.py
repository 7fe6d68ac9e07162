"""The client listener: accepts browser WebSocket connections on one address.

It also owns what applies to all its connections at once: the allowed
origins, compression, and one liveness sweep that pings silent browsers and
drops dead ones (one timer for the listener instead of one per connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.typing import Origin

from relay.config import BrowsersConfig, LimitsConfig, ServerConfig
from relay.config.hosts import base_url
from relay.core.admission import Admission
from relay.core.coalescer import Coalescer
from relay.core.hub import Hub
from relay.core.refusal_lines import RefusalLines
from relay.listeners.browser import BrowserConnection, ConnectionFactory
from relay.process.binding import dual_stack_socket
from relay.process.periodic import every

log = logging.getLogger("relay.client")

#: A pass of the liveness sweep over every browser is spread over this many
#: steps, so that the pings (and their pongs) of browsers that connected
#: together do not all come at once: at 16,700 browsers a worker, a pass in one
#: go took ~80 ms of CPU, which a worker under a CPU quota (0.22 core, 100 ms
#: periods) paid for with its whole period and the next ones, posts waiting.
SWEEP_STEPS = 40
#: Connections whose liveness one turn of the loop checks (and pings) before
#: it lets posts through: ~0.1 ms of checks, a few ms with every one pinged.
SWEEP_SLICE = 256


class ClientListener:
    """Accepts browsers for one ``client`` server entry and tracks them until they go."""

    def __init__(
        self,
        hub: Hub,
        server: ServerConfig,
        *,
        limits: LimitsConfig,
        browsers: BrowsersConfig,
        admission: Admission,
        ssl_context: ssl.SSLContext | None,
        connection_factory: ConnectionFactory = BrowserConnection,
        reuse_port: bool = False,
    ) -> None:
        """Prepare to listen as ``server`` says; nothing is bound until ``start``.

        ``admission`` is shared by every client listener of the node, so the
        connection caps hold for the node as a whole. ``connection_factory``
        builds the protocol of each accepted socket, given this listener.
        ``reuse_port`` shares the port with the node's other worker processes
        (``SO_REUSEPORT``).
        """
        self.hub = hub
        self.limits = limits
        self.admission = admission
        self.origins = _allowed_origins(browsers)
        self.extensions = _extensions(browsers)
        #: Where connections queue their frames until the next flush writes them.
        self.coalescer = Coalescer(
            clock=time.monotonic,
            cpu_clock=time.thread_time,
            call_soon=_call_soon,
            call_later=_call_later,
        )
        self._sweeper: asyncio.Task[None] | None = None
        #: The sweep's current pass (the connections as it began) and where it is.
        self._pass: list[BrowserConnection] = []
        self._pass_at = 0
        self._server_config = server
        self._ssl_context = ssl_context
        self._connection_factory = connection_factory
        self._reuse_port = reuse_port
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._connections: set[BrowserConnection] = set()
        #: Connections refused or dropped by a limit, by reason (for metrics).
        self.rejected: Counter[str] = Counter()
        self._refusal_lines = RefusalLines()
        self._all_gone: asyncio.Event | None = None
        #: Set when the node starts draining: new handshakes get 503 from then on.
        self.draining = False

    def configure(self, limits: LimitsConfig, browsers: BrowsersConfig) -> None:
        """Apply new limits and browser policies; new connections get them at once.

        Open connections read their limits here as they go, except the
        outbound bound, which their transport holds: it is handed to each.
        """
        bound_changed = limits.outbound_buffer_bytes != self.limits.outbound_buffer_bytes
        self.limits = limits
        self.origins = _allowed_origins(browsers)
        self.extensions = _extensions(browsers)
        if bound_changed:
            # A copy: a browser past a lowered bound is reset, and leaves the set.
            for connection in list(self._connections):
                connection.bound_outbound(limits.outbound_buffer_bytes)

    async def start(self, sock: socket.socket | None = None) -> None:
        """Bind and start accepting; or accept on ``sock``, a listening socket passed in.

        Raises:
            OSError: the address cannot be bound.
        """
        await self.accept(sock)
        self._sweeper = asyncio.create_task(
            every(self._sweep_interval, self._sweep, doing="checking browsers' liveness", log=log),
            name="relay-liveness",
        )
        host, port = self.address
        scheme = "wss" if self._ssl_context else "ws"
        log.info("client listener ready on %s", base_url(scheme, host, port))

    async def accept(self, sock: socket.socket | None = None) -> None:
        """Start accepting (again): bind the configured address, or listen on ``sock``.

        Raises:
            OSError: the address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        where: dict[str, Any] = (
            {"sock": sock}
            if sock is not None
            else {
                "host": self._server_config.bind_host,
                "port": self._server_config.port,
                "reuse_address": True,
                "reuse_port": self._reuse_port or None,
                "backlog": 1024,
            }
        )
        if sock is None:
            # "::" takes IPv4 browsers too, as Aphlict's does (asyncio's would not).
            dual = dual_stack_socket(self._server_config, reuse_port=self._reuse_port)
            if dual is not None:
                where = {"sock": dual, "backlog": 1024}
        self._server = await loop.create_server(
            lambda: self._connection_factory(self),
            ssl=self._ssl_context,
            ssl_handshake_timeout=self.limits.handshake_seconds if self._ssl_context else None,
            **where,
        )
        self._address = self._server.sockets[0].getsockname()[:2]

    def listening_sockets(self) -> list[socket.socket]:
        """The sockets this listener accepts on (empty once it stopped accepting)."""
        return [] if self._server is None else list(self._server.sockets)

    def stop_accepting(self) -> None:
        """Accept no more connections here; those open stay (a handoff moves them)."""
        if self._server is not None:
            self._server.close()

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually bound; the port is the OS's pick when configured as 0."""
        assert self._address is not None, "the listener is not started"
        return self._address

    @property
    def connection_count(self) -> int:
        """Open sockets, including those still in their handshake."""
        return len(self._connections)

    def connections(self) -> list[BrowserConnection]:
        """The connections open now (a copy: closing them changes the set)."""
        return list(self._connections)

    def refused(self, reason: str, address: str, detail: str) -> None:
        """Count a refused browser; log each reason at most once per interval.

        A flood of connections over a cap must not become a flood of log lines.
        """
        self.rejected[reason] += 1
        if count := self._refusal_lines.due(reason):
            log.warning(
                "refused %d browser %s since the last report (%s): latest %s, %s",
                count,
                "connection" if count == 1 else "connections",
                reason,
                address,
                detail,
            )

    def line_due(self, kind: str) -> int:
        """How many browsers' problems of ``kind`` a line would report now; 0: stay quiet.

        A browser sending a bad frame, not reading or not answering pings gets
        its line only if none of its kind was written lately: one line per
        connection would let a client write to the log as fast as it connects.
        """
        return self._refusal_lines.due(kind)

    def track(self, connection: BrowserConnection) -> None:
        """Called by a connection once its socket is accepted."""
        self._connections.add(connection)

    def untrack(self, connection: BrowserConnection) -> None:
        """Called by a connection once its socket is closed."""
        self._connections.discard(connection)
        if not self._connections and self._all_gone is not None:
            self._all_gone.set()

    async def stop(self, grace: float) -> None:
        """Stop accepting, close every browser with 1001, and wait up to ``grace`` seconds."""
        if self._server is None:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self._pass = []
        self._server.close()
        self._all_gone = asyncio.Event()
        if self._connections:
            count = len(self._connections)
            log.info("closing %d browser %s", count, "connection" if count == 1 else "connections")
            for connection in list(self._connections):
                connection.going_away()
            try:
                async with asyncio.timeout(grace):
                    await self._all_gone.wait()
            except TimeoutError:
                left = len(self._connections)
                log.warning(
                    "%d %s not close in time; resetting %s",
                    left,
                    "browser did" if left == 1 else "browsers did",
                    "it" if left == 1 else "them",
                )
                for connection in list(self._connections):
                    connection.reset()
        self._server = None

    def _sweep_interval(self) -> float:
        """A few passes per ping interval, each in ``SWEEP_STEPS`` steps.

        Read before each step, so a reload applies at once. A listener with no
        browser waits a whole pass: an idle node wakes once in 5 s, not 8 times a second.
        """
        limits = self.limits
        period = min(limits.ping_interval_seconds, limits.ping_timeout_seconds) / 4
        return period / SWEEP_STEPS if self._connections else period

    async def _sweep(self) -> None:
        """Check the liveness of the pass' next share of connections, a slice per turn.

        A pass pings the browsers gone silent since the last one (about a
        quarter of them when they all connected within one ping interval) and
        reads their pongs: at 16,000 browsers a worker, done in one turn, it
        held every post behind it (own-key posts to 100,000 browsers: p99 329 ms,
        4 ms with no pings). Between slices, posts are delivered. A pass checks
        the connections open as it began; those that came since are checked
        by the next.
        """
        if self._pass_at >= len(self._pass):
            self._pass, self._pass_at = list(self._connections), 0
        share = -(-len(self._pass) // SWEEP_STEPS)  # rounded up: a pass takes SWEEP_STEPS steps
        connections = self._pass[self._pass_at : self._pass_at + share]
        self._pass_at += share
        for start in range(0, len(connections), SWEEP_SLICE):
            if start:
                await asyncio.sleep(0)
            now = time.monotonic()
            for connection in connections[start : start + SWEEP_SLICE]:
                try:
                    connection.check_liveness(now)
                except Exception:
                    log.exception("checking a browser's liveness failed; dropping it")
                    connection.abort()


def _allowed_origins(browsers: BrowsersConfig) -> Sequence[Origin | None] | None:
    """The ``origins`` argument of websockets: None accepts any Origin."""
    if not browsers.origins:
        return None
    allowed: list[Origin | None] = [Origin(origin) for origin in browsers.origins]
    if browsers.allow_missing_origin:
        allowed.append(None)
    return allowed


def _extensions(browsers: BrowsersConfig) -> Sequence[ServerExtensionFactory] | None:
    """permessage-deflate when enabled, tuned for small per-connection memory.

    Browser messages are small JSON commands, so small windows lose little
    ratio; relay's own broadcast frames are sent uncompressed (RFC 7692 allows
    it) so that one frame still serves every browser.
    """
    if not browsers.compression:
        return None
    return [
        ServerPerMessageDeflateFactory(
            server_max_window_bits=11,
            client_max_window_bits=11,
            compress_settings={"memLevel": 4},
        )
    ]


def _call_soon(callback: Callable[[], None]) -> None:
    asyncio.get_running_loop().call_soon(callback)


def _call_later(delay: float, callback: Callable[[], None]) -> None:
    asyncio.get_running_loop().call_later(delay, callback)
