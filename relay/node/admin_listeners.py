"""A node's admin listeners: aiohttp runners, bound as configured or on sockets handed over.

One runner per ``admin`` server entry, in config order, each serving the
node's one ``AdminState``. A handoff (``relay.node.handoff``) takes their
listening sockets, then the plain connections this process has read
nothing of (the successor serves those, so a client that connected just
before is answered when its request comes), and then closes the listeners
here without cutting a request off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from typing import NamedTuple, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from relay.config import LimitsConfig, ServerConfig
from relay.config.hosts import base_url
from relay.config.tls import ListenerContexts
from relay.listeners.admin import HTTP_LOG, AdminState, create_admin_app
from relay.listeners.http_guard import guard_server
from relay.listeners.untouched import read_nothing
from relay.process.binding import bound, dual_stack_socket

log = logging.getLogger("relay.node")

#: How often a closing listener looks whether its last connections sent their request.
_POLL_SECONDS = 0.01
#: How long after its connect a connection that has sent no request is waited for when its
#: listener closes: a post follows its connect within a round trip; a connection silent
#: longer is an idle keep-alive one (a client's pool), not a post on its way.
ON_ITS_WAY_SECONDS = 1.0
#: Loop turns a connection accepted just before accepting stopped takes to reach aiohttp
#: (uvloop: a callback; asyncio: a task, then a callback).
_ACCEPT_TURNS = 3


class WaitingConnection(NamedTuple):
    """An admin connection that had sent nothing yet when its listener stopped accepting."""

    #: Its admin listener: the index among the node's, in config order.
    listener: int
    #: A descriptor of its own, which the holder closes (or serves).
    sock: socket.socket


class AdminListeners:
    """The admin port(s) of one node."""

    def __init__(self, state: AdminState, tls: ListenerContexts, *, reuse_port: bool) -> None:
        """Serve ``state``; ``reuse_port`` when the node's workers share the ports."""
        self._state = state
        self._tls = tls
        self._reuse_port = reuse_port
        self._runners: list[web.AppRunner] = []

    async def start(
        self,
        servers: Sequence[tuple[str, ServerConfig]],
        limits: LimitsConfig,
        sockets: Sequence[socket.socket | None] = (),
        *,
        grace: float,
    ) -> None:
        """Start one listener per ``(index, server)``: bound as configured, or on ``sockets``.

        A listener whose socket is None or missing is bound as configured.

        ``grace`` bounds how long a stop waits for the requests in flight.

        Raises:
            StartupError: a listener could not start.
        """
        given = iter(sockets)
        for index, server in servers:
            await self._start_one(server, index, next(given, None), limits, grace)

    async def _start_one(
        self,
        server: ServerConfig,
        index: str,
        sock: socket.socket | None,
        limits: LimitsConfig,
        grace: float,
    ) -> None:
        runner = web.AppRunner(
            create_admin_app(self._state),
            access_log=None,
            logger=HTTP_LOG,
            handle_signals=False,
            shutdown_timeout=grace,
            # aiohttp closes a connection that has not sent a complete request
            # this long after connecting (slow headers), or after its last one.
            keepalive_timeout=limits.admin_header_seconds,
        )
        await runner.setup()
        assert runner.server is not None  # set up above
        guard_server(runner.server)
        self._runners.append(runner)
        context = self._tls.context_for(server, index)

        async def start_site() -> None:
            # "::" takes IPv4 clients too, as Aphlict's does (asyncio's would not).
            given = sock or dual_stack_socket(server, reuse_port=self._reuse_port)
            site: web.BaseSite = (
                web.SockSite(runner, given, ssl_context=context)
                if given is not None
                else web.TCPSite(
                    runner,
                    server.bind_host,
                    server.port,
                    ssl_context=context,
                    reuse_address=True,
                    reuse_port=self._reuse_port or None,
                )
            )
            await site.start()

        await bound(start_site(), server, index)
        host, port = runner.addresses[0][:2]
        log.info("admin listener ready on %s", base_url("https" if context else "http", host, port))

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of each admin listener, in config order."""
        return [tuple(runner.addresses[0][:2]) for runner in self._runners]

    def listening(self) -> list[list[socket.socket]]:
        """Each listener's listening sockets (several where its ``listen`` names several)."""
        found: list[list[socket.socket]] = []
        for runner in self._runners:
            found.append([])
            for site in runner.sites:
                server = cast(asyncio.Server | None, site._server)  # private: as in sockets()
                found[-1].extend([] if server is None else server.sockets)
        return found

    def sockets(self) -> list[socket.socket]:
        """The listening sockets, in config order (for a handoff)."""
        found: list[socket.socket] = []
        for runner in self._runners:
            for site in runner.sites:
                # aiohttp keeps the asyncio server of a site private; a handoff needs its socket.
                server = cast(asyncio.Server | None, site._server)
                found.extend([] if server is None else server.sockets)
        return found

    async def serve(self, waiting: Sequence[WaitingConnection]) -> None:
        """Serve connections another process took out of its listeners (``take_untouched``).

        Each is served as a connection its own listener had just accepted. One
        whose listener is not here, or which is gone already, is closed (logged).
        They are this method's from the call on: those not served when it ends
        (cancelled) are closed too, and the caller closes none of them.
        """
        loop = asyncio.get_running_loop()
        left = list(waiting)
        try:
            while left:
                listener, sock = left.pop(0)
                runners = self._runners
                server = runners[listener].server if 0 <= listener < len(runners) else None
                try:
                    if server is None:
                        raise OSError(f"this process has no admin listener {listener}")
                    await loop.connect_accepted_socket(server, sock)
                except (OSError, ValueError) as exc:  # ValueError: not a stream socket
                    log.warning("could not serve an admin connection passed on: %s", exc)
                    sock.close()
        finally:
            for _listener, sock in left:
                sock.close()

    async def stop_accepting(self) -> None:
        """Accept no more connections (again: nothing); those accepted are served on."""
        loop = asyncio.get_running_loop()
        if isinstance(loop, asyncio.BaseEventLoop):
            # asyncio's own loop (3.11) drops a connection it accepted in the turn
            # before its server closes (Server._attach asserts, quietly): stop
            # reading the listening sockets first, let those arrive, then close.
            for sock in self.sockets():
                loop.remove_reader(sock.fileno())
            await _turns()
        for runner in self._runners:
            for site in list(runner.sites):
                await site.stop()
        await _turns()

    async def wait_for_requests(self, header_seconds: float) -> None:
        """Wait while a connection accepted just before has not sent its request.

        Call it once accepting stopped. A connection gets until
        :data:`ON_ITS_WAY_SECONDS` after its connect (at most
        ``header_seconds``) to complete its request: aiohttp's shutdown closes
        a connection without a request unanswered, and that client's post
        would be lost. One silent longer is an idle keep-alive connection:
        waiting for it kept the old process of a handoff up to
        ``header_seconds`` after its last browser left.
        """
        loop = asyncio.get_running_loop()
        for _ in range(max(1, round(header_seconds / _POLL_SECONDS))):
            waiting = sum(_request_on_its_way(runner, loop.time()) for runner in self._runners)
            if not waiting:
                break
            await asyncio.sleep(_POLL_SECONDS)  # aiohttp has no event for a request's arrival

    def take_untouched(self, limit: int | None = None) -> list[WaitingConnection]:
        """Take out each connection that has given this process no byte, to be served elsewhere.

        At most ``limit`` (None: all). Call it once accepting stopped
        (``stop_accepting``). Each is returned as a descriptor of its own and
        closed here: this process' descriptor only, so its client sees
        nothing, and what it sends waits in the kernel for whoever serves the
        descriptor. TLS connections stay (their state cannot move), as do
        those this process read a byte of.
        """
        taken: list[WaitingConnection] = []
        for index, runner in enumerate(self._runners):
            for handler in [] if runner.server is None else list(runner.server.connections):
                if limit is not None and len(taken) >= limit:
                    return taken
                if (sock := _take_if_untouched(handler)) is not None:
                    taken.append(WaitingConnection(index, sock))
        return taken

    async def hand_over(self, header_seconds: float) -> None:
        """Stop accepting (the successor accepts on the same sockets), then stop.

        Requests on their way are waited for (``wait_for_requests``), those
        in flight answered; idle connections are closed, as a server may close
        any. (A handoff first takes out those that sent nothing at all:
        ``take_untouched``.)
        """
        await self.stop_accepting()
        await self.wait_for_requests(header_seconds)
        await self.stop()

    async def stop(self) -> None:
        """Stop every listener once its requests in flight are answered (within the grace)."""
        runners, self._runners = self._runners, []
        await asyncio.gather(*(runner.cleanup() for runner in runners))


async def _turns() -> None:
    for _ in range(_ACCEPT_TURNS):
        await asyncio.sleep(0)  # not a wait for time: the loop turns named above


def longest_hand_over(header_seconds: float, grace: float) -> float:
    """The longest ``AdminListeners.hand_over`` takes with ``grace`` given at start.

    Its wait for requests on their way ends once none connected lately (or
    ``header_seconds`` on), then aiohttp answers those in flight within the grace.
    """
    return min(ON_ITS_WAY_SECONDS, header_seconds) + grace


def _request_on_its_way(runner: web.AppRunner, now: float) -> int:
    """How many connections of ``runner`` have sent no request yet, connected lately.

    Lately: less than :data:`ON_ITS_WAY_SECONDS` before ``now`` (the loop's time).
    """
    server = runner.server
    if server is None:
        return 0
    # aiohttp counts the requests it parsed on a connection (0: none yet), and until
    # the first one it closes the connection keepalive_timeout after it connected.
    return sum(
        h._request_count == 0
        and h.transport is not None  # None: closed (taken out, or gone)
        and now - (h._next_keepalive_close_time - h._keepalive_timeout) < ON_ITS_WAY_SECONDS
        for h in server.connections
    )


def _take_if_untouched(handler: RequestHandler) -> socket.socket | None:
    """A descriptor of ``handler``'s connection, closed here, if it gave this process no byte."""
    transport = handler.transport
    # aiohttp counts the requests it parsed on a connection: one with a request
    # is answered here (and a keep-alive one may have a next one buffered).
    if transport is None or handler._request_count or transport.get_extra_info("sslcontext"):
        return None
    raw = transport.get_extra_info("socket")
    if raw is None or not read_nothing(raw.fileno()):
        return None
    # In the same loop turn as the question: nothing is read in between.
    taken = socket.socket(fileno=os.dup(raw.fileno()))
    handler.force_close()
    return taken
