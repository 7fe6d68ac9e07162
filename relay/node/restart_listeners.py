"""Which listening sockets a restart keeps in systemd's store, and which it takes back at start.

Apart from ``relay.node.restart`` (which cuts, stores and adopts) for its
size: a listener is stored under its index in the config when it has one
socket, and taken back only while the config still fits it.
"""

from __future__ import annotations

import logging
import os
import socket

from relay.config import ServerConfig

log = logging.getLogger("relay.restart")


def listening(
    fds: dict[int, int], servers: list[ServerConfig], kind: str
) -> list[socket.socket | None]:
    """The passed listening sockets of ``kind`` in config order; none (closed) if they do not fit.

    None for a listener not stored (one on several addresses: see
    :func:`keepable`), which is bound afresh. The config may have changed
    between the stop and the start (a listener removed, moved to another
    port): then they are all bound afresh.
    """
    sockets = {index: sock for index, fd in fds.items() if (sock := socket_of(fd)) is not None}
    usable = len(sockets) == len(fds) and all(
        index < len(servers) and listens_as(sock, servers[index]) for index, sock in sockets.items()
    )
    if usable:
        return [sockets.get(index) for index in range(len(servers))]
    if fds:
        log.warning(
            "systemd kept %d %s listening sockets that do not fit the config: binding afresh",
            len(fds),
            kind,
        )
    for sock in sockets.values():
        sock.close()
    return []


def socket_of(fd: int) -> socket.socket | None:
    """The socket ``fd`` is; None (``fd`` closed) when it is no socket at all."""
    try:
        return socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        return None


def listens_as(sock: socket.socket, server: ServerConfig) -> bool:
    """Whether ``sock`` is a TCP socket listening where ``server`` says (any port for 0)."""
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        port = sock.getsockname()[1]
    except (OSError, IndexError, TypeError):
        return False
    return bool(
        listening
        and sock.type == socket.SOCK_STREAM
        and sock.family in (socket.AF_INET, socket.AF_INET6)
        and server.port in (0, port)
    )


def keepable(kind: str, index: int, sockets: list[socket.socket]) -> socket.socket | None:
    """The one listening socket of the ``index``-th ``kind`` listener to store, else None.

    A listener whose ``listen`` resolves to several addresses is not stored,
    as the handoff refuses it: stored as one, the next start would serve one
    address family of it only. It is bound afresh (logged): connects and
    posts to it during the gap are refused instead of waiting in a backlog.
    """
    if len(sockets) == 1:
        return sockets[0]
    if sockets:
        log.warning(
            "the %s listener %d listens on %d addresses: not kept in systemd's store, the next "
            "start binds it afresh (what connects to it meanwhile is refused)",
            kind,
            index,
            len(sockets),
        )
    return None
