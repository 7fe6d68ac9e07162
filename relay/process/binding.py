"""Why a listener cannot take its address and port, in the words serve and check-config share.

A listener binds ``servers[i].listen`` (resolved, every address it names) and
``servers[i].port``. When that fails, the problem is one of the two fields:
an address the machine does not have or a name that does not resolve is the
``listen`` field's; a port in use or one that needs privileges is the
``port`` field's. ``relay serve`` reports a failed bind with these words, and
``relay check-config`` probes the same binds beforehand and reports the same
lines, so the two never disagree about a listener. The probe and the
supervisor of a ``--workers`` node, which holds its workers' ports, resolve
``listen`` as the listeners' asyncio servers do (``listen_addresses``).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Awaitable
from typing import Any

from relay.config import ServerConfig
from relay.errors import StartupError

#: A port held by another process: check-config warns (the live node itself holds it).
IN_USE = errno.EADDRINUSE


def listen_problem(where: str, server: ServerConfig, exc: OSError) -> str:
    """The problem ``exc`` (from resolving or binding) makes of the listener at ``where``.

    ``where`` names the entry (``servers[1]``); the line names its field.
    """
    host, port = server.bind_host, server.port
    if isinstance(exc, socket.gaierror):
        reason = exc.strerror or str(exc)
        return f'{where}.listen: cannot resolve "{host}" to an address to listen on: {reason}'
    # asyncio rewords a failed bind ("error while attempting to bind on address ..."):
    # the errno's own words read the same from every listener and from the probe.
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    doing = f"cannot listen for {server.type} connections on {address}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{where}.listen: {doing}: {reason} (this machine has no such address)"
    if exc.errno == errno.EADDRINUSE:
        return f"{where}.port: {doing}: {reason} (another process holds the port)"
    if exc.errno == errno.EACCES and 0 < port < 1024:
        return f"{where}.port: {doing}: {reason} (ports below 1024 need privileges)"
    return f"{where}: {doing}: {reason}"


def is_ipv6_wildcard(host: str) -> bool:
    """Whether ``host`` is the IPv6 unspecified address (``::``), in any spelling."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == 6 and address.is_unspecified


def dual_stack_socket(server: ServerConfig, *, reuse_port: bool) -> socket.socket | None:
    """A socket bound to ``::`` and the port taking IPv6 and IPv4 clients; None for other hosts.

    Node (so Aphlict) binds ``listen: "::"`` with IPV6_V6ONLY off: one socket
    that IPv4 browsers and application servers reach too. asyncio would bind
    it IPv6-only, and they would be refused. Not yet listening: the server
    that is given it listens.

    Raises:
        OSError: the port cannot be bound.
    """
    if not is_ipv6_wildcard(server.bind_host):
        return None
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((server.bind_host, server.port))
    except BaseException:
        sock.close()
        raise
    return sock


#: One address to bind, as ``socket.getaddrinfo`` gives it: family, type, protocol, address.
Address = tuple[socket.AddressFamily, socket.SocketKind, int, tuple[Any, ...]]


def listen_addresses(server: ServerConfig) -> list[Address]:
    """Every address ``server`` listens on: its ``listen`` resolved, as asyncio's servers do.

    Raises:
        socket.gaierror: the host does not resolve.
    """
    infos = socket.getaddrinfo(
        server.bind_host,
        server.port,
        type=socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE,
    )
    return [
        (family, kind, proto, address) for family, kind, proto, _, address in dict.fromkeys(infos)
    ]


def bind_address(
    server: ServerConfig, address: Address, *, reuse_port: bool = False
) -> socket.socket:
    """A socket bound to one of ``server``'s addresses as its listener binds it, not listening.

    ``SO_REUSEADDR`` (so a listener's own recent connections in TIME_WAIT do
    not count), IPv6 sockets IPv6-only but ``::`` (see ``dual_stack_socket``),
    and ``SO_REUSEPORT`` when the port is shared with workers.

    Raises:
        OSError: the address cannot be bound.
    """
    family, kind, proto, where = address
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            only = not is_ipv6_wildcard(server.bind_host)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(only))
        sock.bind(where)
    except BaseException:
        sock.close()
        raise
    return sock


def probe_bind(server: ServerConfig) -> None:
    """Bind every address ``server`` would listen on, then let them go at once.

    Raises:
        OSError: the first failure (``socket.gaierror`` when the host does not resolve).
    """
    for address in listen_addresses(server):
        bind_address(server, address).close()


async def bound(starting: Awaitable[None], server: ServerConfig, where: str) -> None:
    """Await a listener's start, turning a bind failure into a StartupError worded as above."""
    try:
        await starting
    except OSError as exc:
        raise StartupError(listen_problem(where, server, exc)) from None
