"""``systemctl restart`` that disconnects no one: browsers wait in systemd's file descriptor store.

A restart is not a handoff (``relay.node.handoff``): the old process exits
before the new one starts, and only systemd holds anything in between. Under
systemd with a store (``relay.process.fdstore``: ``FileDescriptorStoreMax=``),
a stop does not close the browsers. In order:

1. the admin listening sockets are stored, then the admin listeners finish
   the posts in flight and stop (a post that arrives later waits in the
   kernel's backlog for the next process); a connection still silent a
   second after its connect (an application server's pool) is stored too
   (``relay-waiting-N``), up to :data:`WAITING_KEPT`, for the next process
   to serve;
2. the client listening sockets are stored and no longer accepted on;
   (a listener whose ``listen`` resolves to several addresses is not stored,
   as the handoff refuses it: the next start binds it afresh);
3. every browser connection that can move is cut at a frame boundary (the
   handoff's cut: nothing is read past the last frame) and stored with its
   state in a memfd (``relay-state``), with the bytes relay still owed it (a
   slow reader's: held first, ``relay.listeners.held``, and cut on the next
   round), which the next process writes first, up to
   :data:`STORED_OWED_BYTES` in all; what cannot move (TLS,
   permessage-deflate, still in its handshake, or owed bytes past that) is
   closed with 1001 as at any stop.
   In broker mode the link to Redis stops first, and where it stood goes into
   ``relay-state`` too (``relay.node.restart_position``).

Every post the old process accepted was written to the browsers before the
cut; every later one is the new process'. In a mesh, peers' messages come
through the admin port only (closed before the cut): what they route during
the gap waits in its backlog, as posts do. The next start takes the listeners
(connects and posts waited in the backlog), adopts the browsers, then
accepts posts, so every browser gets every post once, in order (in broker
mode: reads Redis from the stored position before it accepts posts). A store
that is stale or malformed is logged, its sockets closed, and relay starts
clean.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from relay import __version__
from relay.config import Config
from relay.core.history import History
from relay.links.fdstore_wire import (
    BROWSER,
    STATE,
    STATE_LIMIT,
    FdStoreError,
    Passed,
    StoredState,
    browser_room,
    listener_name,
    socket_key,
    waiting_name,
)
from relay.links.handoff_wire import OWED_BYTES_LIMIT, ConnectionState, Position
from relay.links.lease_wire import SharedVerdict
from relay.listeners.movable import MovableConnection, adopt, cut_movable, unhold_all
from relay.node.admin_listeners import WaitingConnection
from relay.node.node import Node
from relay.node.restart_listeners import keepable, listening, socket_of
from relay.node.restart_position import heard, resume_at, stop_reading
from relay.process.fdstore import FdStore, memfd_with, read_memfd, take_passed

log = logging.getLogger("relay.restart")

#: How long a stop waits for browsers still in their handshake, or held (one with bytes
#: still to send: it moves with them on the next round, once they are known).
CUT_SECONDS = 2.0
#: Pause between the rounds of that wait (a bounded poll: no event says a handshake ended).
CUT_POLL = 0.05
#: Bytes owed to slow readers that go into ``relay-state``, all browsers together (base64
#: there, 4/3 of it): with the history's default bound (64 MiB) the state stays well under
#: what the next process reads (``STATE_LIMIT``, 256 MiB). A browser owed more than is
#: left is closed with 1001.
STORED_OWED_BYTES = 4 * OWED_BYTES_LIMIT
#: Most admin connections with nothing read kept in the store (the others are closed, as
#: idle ones): each takes a place in FileDescriptorStoreMax= and a name in
#: LISTEN_FDNAMES (the room of 8 browsers); an application server's pool is a few.
WAITING_KEPT = 100


class Restart:
    """A node's side of a restart: adopt what systemd kept at start, store it all at the stop.

    Made before the node (it takes what systemd passed at once); its
    :meth:`start`, :meth:`ready` and :meth:`stopping` plug into a lifecycle,
    ``serve_restartable``'s or the handoff's (``serve_handing_over``).
    """

    def __init__(
        self,
        store: FdStore,
        shutdown_trigger: Callable[[], Awaitable[object]],
        on_ready: Callable[[Node], None] | None = None,
    ) -> None:
        """Take the descriptors systemd passed; ``shutdown_trigger`` says when to stop.

        ``on_ready(node)`` is called from :meth:`ready`.
        """
        self._store = store
        self._trigger = shutdown_trigger
        self._on_ready = on_ready
        self._passed = take_passed()
        self._node: Node | None = None

    async def start(self, node: Node) -> None:
        """Start ``node`` on what systemd kept (see :func:`adopt_passed`).

        Raises:
            StartupError: a listener could not start.
        """
        self._node = node
        passed, self._passed = self._passed, Passed()
        await adopt_passed(node, self._store, passed)

    def ready(self, node: Node) -> None:
        """``node`` serves (started here, or taken over from a predecessor)."""
        self._node = node
        if self._passed:
            # Taken over from a predecessor: what systemd passed too is nobody's now.
            passed, self._passed = self._passed, Passed()
            log.warning("took over from a predecessor: closing what systemd kept")
            self._store.remove(sorted(passed.names))
            _close_all(passed.all_fds())
        if self._on_ready is not None:
            self._on_ready(node)

    async def stopping(self) -> None:
        """Wait for the shutdown trigger, then keep the browsers in systemd's store.

        A failure is logged: the node's stop then closes them with 1001, as
        at any stop.
        """
        await self._trigger()
        if self._node is None:
            return
        try:
            await store_for_restart(self._node, self._store)
        except Exception:
            log.exception("cannot keep the browsers in systemd's store; closing them")


async def serve_restartable(
    config: Config,
    store: FdStore,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    on_ready: Callable[[Node], None] | None = None,
) -> None:
    """``serve`` that adopts what systemd kept at start and keeps its browsers there at a stop.

    Raises:
        StartupError: a listener could not start.
    """
    restart = Restart(store, shutdown_trigger, on_ready)
    node = Node(config, connection_factory=MovableConnection)
    await restart.start(node)
    try:
        restart.ready(node)
        await restart.stopping()
    finally:
        await node.stop()


async def adopt_passed(node: Node, store: FdStore, passed: Passed) -> None:
    """Start ``node`` on what systemd passed: listeners, then browsers, then the admin side.

    Every descriptor passed is this process' alone afterwards: systemd is
    told to forget them (else it would keep each browser's connection open
    after relay closed it).

    Raises:
        StartupError: a listener could not start; whatever had started is stopped
            (the browsers adopted by then are closed with 1001, as at any stop).
    """
    if not passed:
        await node.start()
        return
    state = _read_state(passed)
    # In broker mode Redis' streams are the history: the first reload fills it.
    if state is not None and state.history and node.broker is None:
        # Before anyone connects: a browser that reconnected during the restart replays it.
        restored = _history(node).restore(state.history, older_by=max(0.0, state.age()))
        log.info("%d messages of history kept across the restart", restored)
    clients = listening(passed.clients, node.config.listeners("client"), "client")
    admins = listening(passed.admins, node.config.listeners("admin"), "admin")
    waiting = [
        WaitingConnection(index, sock)
        for index, fd in passed.waiting
        if (sock := socket_of(fd)) is not None
    ]
    for name, fd in passed.unknown:
        log.warning("closing descriptor %d that systemd kept as %r: not relay's", fd, name)
        os.close(fd)
    store.remove(sorted(passed.names))
    await asyncio.to_thread(store.barrier)
    resumption = resume_at(node, state)  # broker mode: read Redis once the browsers are back
    try:
        await node.start(clients, admin_later=True)
    except BaseException:
        _close_all(passed.browsers)
        for held in waiting:
            held.sock.close()
        raise
    try:
        # Before the admin side accepts: a post taken now reaches the adopted browsers too.
        adopted, stale = await _adopt_browsers(node, passed.browsers, state)
        if resumption is not None:
            resumption.resume()  # what Redis took during the gap reaches them now
        handed, waiting = waiting, []  # start_admin's from the call on
        await node.start_admin(admins, handed)
    except BaseException:
        # Else the node would serve on without an admin side (or the process exit under
        # it): its browsers are told 1001, as at any stop, and reconnect.
        await node.stop()
        # Those no listener took (closing one twice does nothing), and the
        # waiting connections start_admin was not given.
        for kept in [*admins, *(held.sock for held in waiting)]:
            if kept is not None:
                kept.close()
        raise
    node.adopted = adopted
    log.info(
        "restarted with systemd's file descriptor store: %d client and %d admin listeners "
        "and %d browser connections adopted%s%s",
        sum(sock is not None for sock in clients),
        sum(sock is not None for sock in admins),
        adopted,
        f", {len(handed)} admin connections with no request yet served" if handed else "",
        f", {stale} stale ones closed" if stale else "",
    )


def _history(node: Node) -> History:
    """The node's history. Node has no accessor for it: node.py is at its line limit."""
    return node._parts.history


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _read_state(passed: Passed) -> StoredState | None:
    """The state of the browsers passed, or None (logged) when there is none usable."""
    state: StoredState | None = None
    for fd in passed.states:
        try:
            if state is None:
                state = StoredState.decode(read_memfd(fd, STATE_LIMIT))
        except FdStoreError as exc:
            log.error("systemd's store holds a state relay cannot use, starting clean: %s", exc)
        finally:
            os.close(fd)
    if state is None and passed.browsers:
        log.error(
            "systemd kept %d browser connections without their state: closing them",
            len(passed.browsers),
        )
    elif state is not None:
        log.info(
            "state stored by relay %s (pid %d) %.1f s ago", state.version, state.pid, state.age()
        )
    return state


async def _adopt_browsers(node: Node, fds: list[int], state: StoredState | None) -> tuple[int, int]:
    """Adopt each passed browser socket with its stored state; close those without one.

    Returns how many were adopted and how many closed.
    """
    adopted = stale = 0
    age = 0.0 if state is None else max(0.0, state.age())
    for fd in fds:
        sock = socket_of(fd)
        if sock is None:
            stale += 1
            continue
        try:
            key = socket_key(sock.getsockname(), sock.getpeername())
        except OSError:
            key = ""  # the browser went away during the restart
        found = None if state is None else state.connections.get(key)
        if found is None or not 0 <= found.listener < len(node.client_listeners):
            sock.close()
            stale += 1
            continue
        # Its silence went on during the restart: the liveness check counts it.
        found = dataclasses.replace(found, silent_for=found.silent_for + age)
        try:
            await adopt(node.client_listeners[found.listener], found, sock.detach())
            adopted += 1
        except OSError as exc:
            log.warning("could not adopt a browser connection from %s: %s", found.address, exc)
            stale += 1
    return adopted, stale


async def store_for_restart(node: Node, store: FdStore) -> None:
    """Store the listeners and every browser that can move in systemd's store (see the module).

    What is not stored stays with the node, whose stop closes it with 1001.

    Raises:
        OSError: systemd could not be told (the browsers cut are served again first).
    """
    stored: list[str] = []
    for index, sockets in enumerate(node.admin.listening()):
        if (sock := keepable("admin", index, sockets)) is not None:
            stored.append(listener_name("admin", index))
            store.store(stored[-1], [sock.fileno()])
    # Posts on their way are answered here; a connection still silent then
    # (an application server's pool) is kept for the next process.
    await node.admin.stop_accepting()
    await node.admin.wait_for_requests(node.config.limits.admin_header_seconds)
    room = store.capacity - len(stored) - len(node.client_listeners) - 1  # 1: the state
    waiting = node.admin.take_untouched(max(0, min(WAITING_KEPT, room)))
    await node.admin.stop()  # posts in flight are answered (and delivered) first
    try:
        for held in waiting:
            stored.append(waiting_name(held.listener))
            store.store(stored[-1], [held.sock.fileno()])
    finally:
        for held in waiting:
            held.sock.close()  # systemd keeps its own duplicates
    for index, listener in enumerate(node.client_listeners):
        if (sock := keepable("client", index, listener.listening_sockets())) is not None:
            stored.append(listener_name("client", index))
            store.store(stored[-1], [sock.fileno()])
        listener.stop_accepting()
    # Broker mode: nothing more reaches the browsers; the next process goes on from here.
    position = await stop_reading(node)
    cut = await _cut_browsers(node)
    # Past FileDescriptorStoreMax= systemd would close them without a word; past what
    # LISTEN_FDNAMES can name, it could not start relay again.
    room = min(store.capacity - len(stored) - 1, browser_room([*stored, STATE]))
    room = max(0, room)
    kept, left = cut[:room], cut[room:]
    cut_at = time.monotonic()
    try:
        _store_browsers(store, kept, _history(node).export(), position, heard(node))
    except OSError:
        left = cut
        raise
    finally:
        for connection, state, _fd in left:
            await connection.resume(state, (time.monotonic() - cut_at) * 1000.0)
    if not await asyncio.to_thread(store.barrier):
        log.warning("systemd did not confirm that it keeps the browsers; they may be lost")
    for connection, _state, _fd in kept:
        connection.release()
    await asyncio.sleep(0)  # their connection_lost runs before the drain looks at who is left
    # Those left are closed at once, not spread over drain_seconds: systemd starts the
    # next process only once this one exits, and the browsers kept wait for it.
    node.hurry()
    owed = [len(state.owed) for _, state, _ in kept if state.owed]
    log.info(
        "stopping for a restart: %d browser connections and %d listeners kept in systemd's "
        "file descriptor store%s%s%s",
        len(kept),
        len(stored) - len(waiting),
        f" ({len(owed)} with {sum(owed)} bytes this process had not sent yet)" if owed else "",
        f", and {len(waiting)} admin connections with no request yet" if waiting else "",
        f"; {len(left)} more than the store takes are closed" if left else "",
    )


def _store_browsers(
    store: FdStore,
    kept: list[tuple[MovableConnection, ConnectionState, int]],
    history: list[Any],
    position: Position | None,
    verdicts: list[SharedVerdict],
) -> None:
    """Store the browsers' sockets, then their states keyed by each socket's addresses."""
    states: dict[str, ConnectionState] = {}
    for _connection, state, fd in kept:
        sock = socket.socket(fileno=fd)
        try:
            states[socket_key(sock.getsockname(), sock.getpeername())] = state
        except OSError:
            pass  # gone already: stored without a state, closed by the next start
        finally:
            sock.detach()  # the transport still owns the descriptor
    record = StoredState(os.getpid(), __version__, time.time(), states, history, position, verdicts)
    memfd = memfd_with(STATE, record.encode())
    try:
        store.store(BROWSER, [fd for _, _, fd in kept])
        store.store(STATE, [memfd], poll=False)
    finally:
        os.close(memfd)


async def _cut_browsers(node: Node) -> list[tuple[MovableConnection, ConnectionState, int]]:
    """Cut every browser that can move, waiting (bounded) for those not ready yet.

    Those held still at the end (owed past what the state takes) are served
    here again: the stop closes them with 1001.
    """
    cut: list[tuple[MovableConnection, ConnectionState, int]] = []
    deadline = time.monotonic() + CUT_SECONDS
    owed_room = STORED_OWED_BYTES
    while True:
        more, waiting = cut_movable(node.client_listeners, owed_room=owed_room)
        cut += more
        owed_room -= sum(len(state.owed) for _, state, _ in more)
        # A round that moved some may have left some with bytes still to send, now held.
        if not (waiting or more) or time.monotonic() > deadline:
            await unhold_all(node.client_listeners)
            return cut
        await asyncio.sleep(CUT_POLL)
