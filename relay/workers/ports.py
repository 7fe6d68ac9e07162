"""The supervisor's hold on the node's ports while workers come and go.

Workers listen with ``SO_REUSEPORT``, and the kernel spreads new connections
over every socket listening on the port. The supervisor keeps one socket of
its own bound (never listening, so it gets no connections) on each port: a
port configured as 0 gets its number once for the whole node, and the port
stays the node's while a worker restarts, even if all of them are down for a
moment.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from relay.config import ServerConfig
from relay.errors import StartupError


class PortReservation:
    """Bound, non-listening ``SO_REUSEPORT`` sockets on each server's address."""

    def __init__(self) -> None:
        """Nothing is held until ``reserve``."""
        self._sockets: list[socket.socket] = []

    def reserve(self, servers: Sequence[ServerConfig]) -> tuple[int, ...]:
        """Take each server's address; returns the port of each (the OS's pick for 0).

        A port some other program listens on is refused here, before any
        worker starts: ``SO_REUSEPORT`` alone would let two relays of the
        same user share a port silently.

        Raises:
            StartupError: an address cannot be bound; nothing stays reserved.
        """
        ports = []
        try:
            for index, server in enumerate(servers):
                ports.append(self._reserve_one(index, server))
        except BaseException:
            self.release()
            raise
        return tuple(ports)

    def _reserve_one(self, index: int, server: ServerConfig) -> int:
        host = server.bind_host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            # First without SO_REUSEPORT: fails if anyone at all listens on the
            # port (SO_REUSEADDR only looks past connections left in TIME_WAIT).
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, server.port))
                port = int(probe.getsockname()[1])
            held = socket.socket(family, socket.SOCK_STREAM)
            try:
                held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                held.bind((host, port))
            except BaseException:
                held.close()
                raise
        except OSError as exc:
            raise StartupError(
                f"servers[{index}]: cannot listen for {server.type} connections on "
                f"{host}:{server.port}: {exc.strerror or exc}"
            ) from None
        self._sockets.append(held)
        return port

    def release(self) -> None:
        """Let the ports go."""
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
