"""Upgrading without disconnecting anyone: hand a node's listeners and browsers to new code.

A node started with a handoff socket (``relay serve --handoff-socket PATH``)
listens there, in a private unix socket, for its successor. ``relay serve
--take-over --handoff-socket PATH`` (the new code) connects and receives, in
order (the messages are in ``relay.links.handoff_wire``):

1. the client listening sockets: both processes accept browsers from then on,
   so no connect is refused at any moment;
2. every browser connection, in batches, each cut at a frame boundary with
   its state; the old process stops reading it, has nothing left to write
   to it, and the hub forgets it, in one step. A slow reader, to which the
   old process' transport still holds bytes, goes with those bytes, which
   the successor writes first (where it says it takes them: an older one
   gets only the connections owed nothing); it is held first
   (``relay.listeners.held``) and cut in a later round;
3. the admin listening sockets, once the old process holds no browsers and
   has finished the posts in flight, with the plain admin connections it
   had read nothing of; then it says ``DONE`` and exits.

The cut is by position in one ordered stream: from step 1 on, every message
the old process routes is also *forwarded* down the same channel. A message
forwarded before a connection's batch was written to it by the old process;
one forwarded after it is the successor's to deliver. Posts are accepted by
exactly one process (the old one until step 3, the successor once the
handoff is done: it holds the admin sockets unserved until then), so every
browser gets every post once, in order, without the processes comparing ids.
In broker mode what is forwarded is what the hub delivers, and the
successor's broker reads Redis from the stream position where the old one
stopped (``relay.node.handoff_cut``); presence, the cluster-status lease and
alerts are each process' own (README, "Upgrading without disconnecting anyone").

A failure (the successor exits, stalls, or sends garbage) leaves the old
process serving: it says ``ABORT`` with the batches not acknowledged yet,
and resumes them (what they missed is replayed from history) and accepts
again on the sockets it kept only once the successor has released them or
is gone, a hung one killed (``relay.node.handoff_abort``), so that no
socket is ever served by both. The successor, on ``ABORT`` or on a channel
that ends before ``DONE``, gives those back (drops its descriptor only),
closes the others it adopted (1001: they reconnect to the old process and
replay) and exits, so that one process serves, not two.

The end is the old process reading the successor's ``DONE``: from then on
it never serves again, and it closes the channel and exits. It stops
forwarding as it says its own ``DONE`` (what it routes later is the
successor's to read from Redis or its peers), so that neither side ever
closes the channel with something unread: on a unix socket that resets the
other end, which then loses the ``DONE`` queued behind the reset and would
take a clean end for a failure.

The node's pidfile passes over too: the successor writes its pid there once
the handoff is done (``relay.node.handoff_serve``), and this process, told
in ``HELLO`` which file that is, leaves it to it (``relay.process.pidfile``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

from relay.broker.link import BrokerState
from relay.config import LimitsConfig
from relay.errors import StartupError
from relay.links.handoff_wire import (
    BATCH_SOCKETS,
    OWED_BYTES_LIMIT,
    HandoffError,
    Kind,
    admin_connections_body,
    batches,
    listener_kinds,
    successor_pidfile,
    takes_admin_connections,
    takes_owed_bytes,
)
from relay.listeners.handoff import Channel
from relay.listeners.movable import cut_movable, unhold_all
from relay.node.admin_listeners import longest_hand_over
from relay.node.handoff_abort import Moving, give_up, watch
from relay.node.handoff_cut import (
    cannot_cut,
    forward_routed,
    heard_verdicts,
    position,
)
from relay.node.node import SHUTDOWN_GRACE, Node
from relay.process.pidfile import PidFile

log = logging.getLogger("relay.handoff")

#: Connections cut in one round (their batches are sent at once, then acknowledged).
ROUND_CONNECTIONS = 5 * BATCH_SOCKETS
#: Bytes owed to the connections cut in one round, in all: what one round queues on the
#: channel at once (as base64, 4/3 of it), whatever the number of slow readers.
ROUND_OWED_BYTES = 2 * OWED_BYTES_LIMIT
#: Pause between rounds that wait for connections still in their handshake or held (a bounded poll).
STRAGGLER_POLL = 0.05
#: At the end of a handoff in broker mode, how long the posts queued for Redis may
#: take to get there (seconds); well within the successor's wait for DONE.
BROKER_FLUSH_SECONDS = 5.0


class HandoffPoint:
    """Where a running node waits for its successor: a unix socket only its user can reach."""

    def __init__(
        self,
        node: Node,
        path: str,
        *,
        on_done: Callable[[], None],
        pidfile: PidFile | None = None,
    ) -> None:
        """Listen at ``path`` for ``node``; ``on_done`` is called once a handoff succeeded.

        ``pidfile``: this process's, handed to a successor that writes the same file.
        """
        self._node = node
        self._path = path
        self._on_done = on_done
        self._pidfile = pidfile
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Bind the socket (replacing one a predecessor left) and wait for a successor.

        Raises:
            StartupError: the path cannot be bound.
        """
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            old_umask = os.umask(0o177)  # the socket file is the operator's only
            try:
                sock.bind(self._path)
            finally:
                os.umask(old_umask)
            sock.listen(1)
        except OSError as exc:
            sock.close()
            raise StartupError(f"cannot listen for a successor at {self._path}: {exc}") from None
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)
        log.info("waiting for a successor at %s", self._path)

    def _accept(self) -> None:
        assert self._sock is not None
        try:
            conn, _ = self._sock.accept()
        except BlockingIOError:
            return
        if self._task is not None and not self._task.done():
            conn.close()  # one handoff at a time
            return
        self._task = asyncio.get_running_loop().create_task(self._run(Channel(conn)))

    async def _run(self, channel: Channel) -> None:
        moving = Moving(self._node, channel, watch(channel))
        try:
            await _hand_over(moving)
        except (HandoffError, OSError, TimeoutError) as exc:
            log.error("handoff failed, this process keeps serving: %s", str(exc) or "no answer")
            await give_up(moving)
        except Exception:
            log.exception("handoff failed, this process keeps serving")
            await give_up(moving)
        else:
            self.close(unlink=False)  # the successor listens at the path now
            if self._pidfile is not None:
                # The successor writes it now: this process's exit must not remove it.
                self._pidfile.hand_over(moving.successor_pidfile)
            self._on_done()
        finally:
            channel.close()
            moving.close()  # spares left (if cancelled: the node stops) and the watch

    def close(self, *, unlink: bool = True) -> None:
        """Stop waiting for a successor; remove the socket file unless a successor owns it."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)


def longest_quiet(limits: LimitsConfig) -> float:
    """The longest a successor waits for the old process' next message before ``DONE``.

    The old process sends nothing but forwarded messages while it waits for
    browsers still in their handshake (``_move_stragglers``) and then for the
    admin requests on their way and in flight (``Node.close_admin``); past
    those, its successor's answer deadline. An old process silent longer is
    hung (``relay.node.handoff_take``).
    """
    admin = longest_hand_over(limits.admin_header_seconds, SHUTDOWN_GRACE)
    return limits.handshake_seconds + admin + limits.handoff_answer_seconds


async def _answer(moving: Moving, expected: Kind) -> dict[str, object]:
    if (item := await moving.channel.receive_within(moving.answer_seconds)) is None:
        raise TimeoutError
    kind, body, fds = item
    for fd in fds:
        os.close(fd)
    if kind is not expected:
        raise HandoffError(f"expected {expected.name} from the successor, got {kind.name}")
    return body


def _dup_all(sockets: list[socket.socket]) -> list[int]:
    return [os.dup(sock.fileno()) for sock in sockets]


async def _hand_over(moving: Moving) -> None:
    """The old process' side, from HELLO to DONE."""
    node, channel = moving.node, moving.channel
    hello = await _answer(moving, Kind.HELLO)
    log.info("handing over to relay %s (pid %s)", hello.get("version"), hello.get("pid"))
    moving.takes_owed = takes_owed_bytes(hello)
    moving.successor_pidfile = successor_pidfile(hello)
    if (reason := cannot_cut(node)) is not None:
        raise HandoffError(reason)
    client_sockets = []
    for listener in node.client_listeners:
        sockets = listener.listening_sockets()
        if len(sockets) != 1:
            raise HandoffError("a client listener listens on several addresses")
        client_sockets.append(sockets[0])
    moving.spare_clients = [socket.socket(fileno=fd) for fd in _dup_all(client_sockets)]
    # From here on, in the same step as the position is read: the cut starts.
    unhook = forward_routed(node, channel)

    def stop_forwarding() -> None:
        unhook()  # idempotent
        if moving.forwarded_until is None:
            moving.forwarded_until = time.monotonic()

    try:
        body = listener_kinds(["client"] * len(client_sockets)) | position(node)
        body |= heard_verdicts(node)
        channel.send(Kind.LISTENERS, body, _dup_all(client_sockets), owned=True)
        moving.passed = True
        await _move_connections(moving)
        moving.stopped_accepting = True
        for listener in node.client_listeners:
            listener.stop_accepting()
        await _move_stragglers(moving)
        if held := await unhold_all(node.client_listeners):
            log.warning(
                "%d browser connections were held and did not move: served here until the end",
                held,
            )
        admin = node.admin_sockets()
        moving.spare_admin = [socket.socket(fileno=fd) for fd in _dup_all(admin)]
        moving.admin_closed = True
        if takes_admin_connections(hello):  # an older successor is sent none: closed here
            moving.spare_waiting = await node.take_waiting_admin()
        await node.close_admin()  # posts in flight are answered, and forwarded
        await _until_redis_has_them(moving)
        # Sent once nothing here serves them: a failure to send finds them all in spare.
        channel.send(
            Kind.ADMIN,
            listener_kinds(["admin"] * len(admin)),
            _dup_all(moving.spare_admin),
            owned=True,
        )
        waiting = moving.spare_waiting
        for start in range(0, len(waiting), BATCH_SOCKETS):  # as many as one message carries
            batch = waiting[start : start + BATCH_SOCKETS]
            body = admin_connections_body([connection.listener for connection in batch])
            fds = _dup_all([connection.sock for connection in batch])
            channel.send(Kind.ADMIN_CONNECTIONS, body, fds, owned=True)
        # DONE is the last message: the successor reads from Redis from DONE's
        # position on (in a mesh it takes every post now, peers' too), so what
        # is routed here later is not its to deliver, and left unread it would
        # reset the channel when the successor closes it.
        stop_forwarding()
        channel.send(Kind.DONE, {"moved": moving.moved} | position(node))
        await _answer(moving, Kind.DONE)
    finally:
        stop_forwarding()  # idempotent
    passed_on = len(moving.spare_waiting)
    moving.close_spares()
    owed = (
        f" ({moving.owed_moved} with {moving.owed_bytes} bytes this process had not sent yet)"
        if moving.owed_moved
        else ""
    )
    log.info(
        "handoff done: %d browser connections moved%s%s",
        moving.moved,
        owed,
        f", {passed_on} admin connections with no request yet passed on" if passed_on else "",
    )


async def _until_redis_has_them(moving: Moving) -> None:
    """Broker mode: wait until every post this process took is in Redis (bounded).

    The cut needs Redis at HELLO, but it may go away during a handoff that
    waits seconds for handshakes: the posts taken meanwhile are delivered
    here and queued for Redis, and that queue would die with this process,
    lost to every other node and worker. No post comes in any more (the
    admin listeners are closed), so the queue only drains.

    Raises:
        HandoffError: Redis is still away, or the queue still holds posts,
            after ``BROKER_FLUSH_SECONDS`` (or ``handoff_answer_seconds``, if
            shorter): this process serves on and publishes them when Redis
            returns.
    """
    broker = moving.node.broker
    if broker is None:
        return
    limit = min(BROKER_FLUSH_SECONDS, moving.node.config.limits.handoff_answer_seconds)
    deadline = time.monotonic() + limit
    while broker.state is not BrokerState.UP or broker.queue_length:
        if moving.channel.closed:
            raise HandoffError("the successor closed the handoff channel")
        if time.monotonic() > deadline:
            raise HandoffError(
                f"the broker is {broker.state.value} with {broker.queue_length} posts queued "
                f"for it after {limit:g} s, which would be lost with this process"
            )
        await asyncio.sleep(STRAGGLER_POLL)


async def _move_stragglers(moving: Moving) -> None:
    """Move the browsers that finish their handshake now, until none is left in one (bounded).

    And the held ones (``relay.listeners.held``), once what they are owed is known.

    Raises:
        HandoffError: the successor went away meanwhile; nothing else would
            notice before the deadline, while its browsers are gone already.
    """
    node, channel = moving.node, moving.channel
    limit = node.config.limits.handshake_seconds
    moved, waiting = await _move_connections(moving)
    if waiting:
        log.info(
            "%d browser connections moved; waiting up to %g s for %d still in their handshake "
            "or held",
            moving.moved,
            limit,
            waiting,
        )
    deadline = time.monotonic() + limit
    while moved or waiting:
        if channel.closed:
            raise HandoffError("the successor closed the handoff channel")
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(STRAGGLER_POLL)
        moved, waiting = await _move_connections(moving)


async def _move_connections(moving: Moving) -> tuple[int, int]:
    """Cut, pass and release every connection that can move now.

    Returns how many moved and how many are still in their handshake here
    (each moves once open) or held (each moves once what it is owed is known).
    """
    node, channel = moving.node, moving.channel
    owed_room = ROUND_OWED_BYTES if moving.takes_owed else None
    total = 0
    while True:
        cut, waiting = cut_movable(node.client_listeners, ROUND_CONNECTIONS, owed_room)
        if not cut:
            return total, waiting
        # Sent in the same step as the cut: any message routed later is forwarded after them.
        now = time.monotonic()
        first = moving.batches_sent
        for indices in batches(state for _, state, _ in cut):
            number = moving.batches_sent
            moving.batches_sent += 1
            moving.pending[number] = [(cut[i][0], cut[i][1]) for i in indices]
            moving.cut_at[number] = now
            records = [cut[i][1].to_json() for i in indices]
            channel.send(
                Kind.CONNECTIONS,
                {"batch": number, "connections": records},
                [cut[i][2] for i in indices],
            )
        for number in range(first, moving.batches_sent):
            adopted = await _answer(moving, Kind.ADOPTED)
            done = moving.pending.pop(int(str(adopted.get("batch", number))), [])
            for connection, state in done:
                connection.release()
                if state.owed:
                    moving.owed_moved += 1
                    moving.owed_bytes += len(state.owed)
            moving.moved += len(done)
        total += len(cut)
