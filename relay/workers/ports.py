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
from relay.process.binding import bind_address, listen_addresses, listen_problem


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
        """Hold every address ``server``'s workers will listen on; returns the port they share.

        The addresses are those the listeners resolve ``listen`` to, all of
        them (a name may stand for IPv6 addresses only, or for several), and
        a failure is worded as the listeners and check-config word it.
        """
        held: list[socket.socket] = []
        port = server.port
        try:
            for family, kind, proto, resolved in listen_addresses(server):
                # Port 0: the OS picks the port at the first address, the rest take the same.
                address = (family, kind, proto, (resolved[0], port, *resolved[2:]))
                # First without SO_REUSEPORT: fails if anyone at all listens on the
                # port (SO_REUSEADDR only looks past connections left in TIME_WAIT).
                bind_address(server, address).close()
                sock = bind_address(server, address, reuse_port=True)
                held.append(sock)
                port = int(sock.getsockname()[1])
        except OSError as exc:
            for sock in held:
                sock.close()
            raise StartupError(listen_problem(f"servers[{index}]", server, exc)) from None
        self._sockets += held
        return port

    def release(self) -> None:
        """Let the ports go."""
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
