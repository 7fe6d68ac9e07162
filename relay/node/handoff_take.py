"""A successor's side of a handoff (``relay.node.handoff``): take over, or give back.

``take_over`` connects to the old process and starts a node on the client
listening sockets it passes; ``adopt_all`` adopts what follows until
``DONE``. A handoff that fails on the old side (``ABORT``, or a channel that
ends before ``DONE`` while the old process lives on) raises: what the old
process may still serve is given back (on ``ABORT``, confirmed with
``RELEASED``: the old process resumes those batches only then, see
``relay.node.handoff_abort``), and the caller stops the node, so that two
processes never serve the same sockets. When the channel ended because the
old process died, this one serves on alone. So it does when the old process
lives but says nothing for longer than it ever does while it works
(``relay.node.handoff.longest_quiet``): it is hung, and is killed first.
The browsers it still held lose their connection with it and reconnect
here; those adopted see nothing.

Once both have said ``DONE``, the handoff is done when the old process closes the
channel: it does so when it has read this one's ``DONE``, and it never
serves again after that. Before that it may still give up (its wait for
this ``DONE`` timed out, the ``DONE`` in flight): its ``ABORT`` comes first.
An old process that neither closes nor says anything within
``limits.handoff_answer_seconds`` (its own deadline, the same length, passed
before this one's) is alive but hung, and would decide whenever it wakes: it
is killed, and this process serves on alone. It holds nothing by then
(every batch acknowledged, its admin listener closed), so nothing is lost;
under systemd this process says it is the main process first, as the old
one's death would otherwise end the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass

from relay import __version__
from relay.config import Config
from relay.errors import StartupError
from relay.links.handoff_wire import (
    ConnectionState,
    HandoffError,
    Kind,
    Place,
    admin_listeners_of,
    hello_body,
    released_body,
    resumed_of,
)
from relay.listeners.handoff import Channel
from relay.listeners.movable import MovableConnection, adopt
from relay.node.admin_listeners import WaitingConnection
from relay.node.handoff import longest_quiet
from relay.node.handoff_cut import Resumption, read_listeners
from relay.node.node import Node
from relay.node.restart_listeners import listens_as
from relay.process.peer_process import WatchedProcess
from relay.process.pidfile import PidFile
from relay.process.systemd import Notifier
from relay.workers.plan import WorkerRole

log = logging.getLogger("relay.handoff")

#: After the channel ends before DONE, how long the old process may take to be
#: seen as exited (it closes its descriptors a moment before that) if it died.
OLD_EXIT_SECONDS = 1.0


class _Hung(Exception):
    """The old process has said nothing for longer than it ever does while it works."""


@dataclass(frozen=True, slots=True)
class _Adopted:
    """A connection adopted here, with its record's position in its batch and its keys then."""

    index: int
    keys: frozenset[str]
    connection: MovableConnection


@dataclass(slots=True)
class _Batch:
    """One batch passed here: the connections adopted, and the positions of those that failed."""

    adopted: list[_Adopted]
    unadopted: list[int]


#: Batch number -> the batch.
_Batches = dict[int, _Batch]


async def take_over(
    config: Config,
    path: str,
    role: WorkerRole | None = None,
    pidfile: PidFile | None = None,
) -> tuple[Node, Channel, Resumption]:
    """Connect to the node waiting at ``path`` and start a node on the sockets it passes.

    ``role``: the node is one worker of a ``--workers`` node, taking over
    from the worker of its slot. ``pidfile``: this process's, which may name
    the node at ``path`` (the process at the other end of the socket) but
    no other live relay; the caller writes it once the handoff is done.

    Returns the node (client listeners started, admin not yet, broker held
    back), the channel and the cut to go on with in ``adopt_all``.

    Raises:
        StartupError: no node waits at ``path``, it does not hand over, or
            the pidfile names another live relay.
    """
    try:
        channel = await Channel.connect(path)
    except OSError as exc:
        raise StartupError(f"no relay to take over from at {path}: {exc}") from None
    if pidfile is not None:
        try:
            pidfile.check_take_over(channel.peer_pid)
        except StartupError:
            channel.close()  # before HELLO: the old process serves on
            raise
    written = None if pidfile is None else str(pidfile.path.absolute())
    channel.send(Kind.HELLO, hello_body(__version__, os.getpid(), written))
    seconds = config.limits.handoff_answer_seconds
    try:
        if (first := await channel.receive_within(seconds)) is None:
            raise HandoffError(f"no answer in {seconds:g} s")
    except HandoffError as exc:
        channel.close()
        raise StartupError(f"the relay at {path} did not hand over: {exc}") from None
    kind, body, fds = first
    sockets = [socket.socket(fileno=fd) for fd in fds]
    try:
        if kind is not Kind.LISTENERS:
            raise HandoffError(f"it sent {kind.name} first, not its listeners")
        start = read_listeners(body)
        _fit_the_config(config, sockets)
    except HandoffError as exc:
        channel.close()
        for sock in sockets:
            sock.close()
        raise StartupError(f"the relay at {path} did not hand over: {exc}") from None
    node = Node(config, connection_factory=MovableConnection, role=role)
    resumption = Resumption(node, *start)
    await node.start(sockets, admin_later=True)
    return node, channel, resumption


def _fit_the_config(config: Config, sockets: list[socket.socket]) -> None:
    """Refuse client listening sockets that are not the config's client listeners, in order.

    They are matched by position, and each browser passed over names its
    listener by its index: with a listener removed or moved to another port
    since the old process started, this process would serve the ports of
    the old config and close the browsers of a listener it does not have.

    Raises:
        HandoffError: they do not fit; the old process serves on.
    """
    servers = [server for server in config.servers if server.type == "client"]
    if len(sockets) != len(servers) or not all(map(listens_as, sockets, servers)):
        passed = ", ".join(str(sock.getsockname()[1]) for sock in sockets)
        wanted = ", ".join(str(server.port) for server in servers)
        raise HandoffError(
            f"its client listeners (ports {passed}) are not this config's (ports {wanted}); "
            "a change of listeners takes a restart"
        )


async def adopt_all(node: Node, channel: Channel, resumption: Resumption) -> None:
    """Adopt the connections, messages and admin listeners the old node sends, until DONE.

    The admin listening sockets are served only once the handoff is done (or
    the old process is gone): until then the old process may still give up
    and accept on them again, and a post this process had taken meanwhile
    would reach none of the browsers (those it adopted go back, and the old
    process' history never had it). Posts wait in the sockets' backlog for
    those moments, never refused.

    Raises:
        StartupError: the admin listeners cannot start, or the old node said
            ``ABORT`` or the channel ended before ``DONE``. The connections the
            old node may still serve are given back; ``node.stop`` closes the rest.
    """
    admin: list[socket.socket] = []
    waiting: list[WaitingConnection] = []
    try:
        await _adopt_until_done(node, channel, resumption, admin, waiting)
    except BaseException:
        for sock in [*admin, *(connection.sock for connection in waiting)]:
            sock.close()  # this process' copies only: the old one serves its own
        raise
    resumption.resume()
    await node.start_admin(admin, waiting)  # none passed (the old process died first): bound afresh


async def _adopt_until_done(
    node: Node,
    channel: Channel,
    resumption: Resumption,
    admin: list[socket.socket],
    waiting: list[WaitingConnection],
) -> None:
    """``adopt_all``'s reading of the channel.

    The admin listening sockets passed go into ``admin``, the admin
    connections with no request yet into ``waiting``.
    """
    adopted: _Batches = {}
    old = WatchedProcess(channel.peer_pid) if channel.peer_pid else None
    quiet = longest_quiet(node.config.limits)
    try:
        while True:
            if (item := await channel.receive_within(quiet)) is None:
                raise _Hung(f"nothing said for {quiet:g} s")
            kind, body, fds = item
            if kind is Kind.FORWARD:
                resumption.forwarded(body)
            elif kind is Kind.CONNECTIONS:
                number = int(str(body.get("batch", len(adopted))))
                adopted[number] = await _adopt_batch(node, channel, body, fds)
            elif kind is Kind.ADMIN:
                admin.extend(socket.socket(fileno=fd) for fd in fds)
            elif kind is Kind.ADMIN_CONNECTIONS:
                passed = [socket.socket(fileno=fd) for fd in fds]
                try:
                    listeners = admin_listeners_of(body, len(passed))
                except HandoffError:
                    for sock in passed:
                        sock.close()
                    raise
                waiting.extend(map(WaitingConnection, listeners, passed))
            elif kind is Kind.ABORT:
                resumed = await _release(node, channel, adopted, body)
                raise StartupError(
                    f"the old process failed to hand over and serves again: {len(resumed)} "
                    "batches of browser connections given back to it, the others closed"
                )
            elif kind is Kind.DONE:
                resumption.done(body)
                with contextlib.suppress(HandoffError):  # it may have given up: read on
                    channel.send(Kind.DONE, {})
                await _confirmed(node, channel, adopted, old)
                log.info("took over %s browser connections", body.get("moved"))
                break
    except (HandoffError, ValueError, _Hung) as exc:
        if isinstance(exc, _Hung) and old is not None:
            await _kill_hung(node, old, f"has said nothing for {quiet:g} s in mid-handoff")
        if old is not None and await old.exited(OLD_EXIT_SECONDS):
            # Nobody else serves them now: this process serves on, and takes
            # the browsers the old one held as they reconnect (it holds the
            # client listening sockets); the admin port is bound afresh unless
            # it was passed already.
            log.error(
                "the old process (pid %d) %s during the handoff (%s): this process serves on "
                "with the %d browser connections it adopted",
                old.pid,
                "was killed" if isinstance(exc, _Hung) else "died",
                exc,
                sum(len(batch.adopted) for batch in adopted.values()),
            )
        else:
            # Whether the old process still serves them is unknown: drop only
            # this process' descriptors. Those it released end with this
            # process (and their browsers reconnect); those it kept, it serves on.
            _give_back(adopted, None)
            raise StartupError(
                f"the old process stopped before the handoff was done: {exc}"
            ) from None
    finally:
        if old is not None:
            old.close()


async def _confirmed(
    node: Node,
    channel: Channel,
    adopted: _Batches,
    old: WatchedProcess | None,
) -> None:
    """Wait for the old process to close the channel on our ``DONE``; kill it if it hangs.

    Raises:
        StartupError: it said ``ABORT`` (its wait for our ``DONE`` timed out).
    """
    seconds = node.config.limits.handoff_answer_seconds
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        # Until the deadline, and then what came as it passed.
        while (item := await channel.receive_within(deadline - loop.time())) is not None:
            kind, body, _fds = item
            if kind is Kind.ABORT:
                await _release(node, channel, adopted, body)
                raise StartupError("the old process gave up on the handoff at its end")
    except HandoffError:
        return  # it read our DONE and closed the channel: done
    if old is None or (exited := await old.exited(0)) is None:
        log.warning(
            "the old process has not closed the handoff channel %g s after its end, and "
            "whether it still runs cannot be known here; serving on",
            seconds,
        )
        return
    if exited:
        return  # it died meanwhile: this process serves alone
    await _kill_hung(node, old, f"has not confirmed the end of the handoff in {seconds:g} s")


async def _kill_hung(node: Node, old: WatchedProcess, why: str) -> None:
    """Kill the old process, which ``why`` though it runs, and wait to see it exit.

    It would decide whenever it woke, and might serve beside this process.
    """
    if await old.exited(0) is not False:
        return  # gone already, or not to be known (then not to be killed either)
    if node.role is None:
        # Under systemd the old process is the service's main process until now.
        Notifier().notify(f"MAINPID={os.getpid()}")
    log.error(
        "the old process (pid %d) %s though it runs (hung?): killing it, so that it never "
        "serves beside this process",
        old.pid,
        why,
    )
    old.kill()
    if not await old.exited(OLD_EXIT_SECONDS):
        log.error("the old process (pid %d) still runs after SIGKILL", old.pid)


async def _release(
    node: Node, channel: Channel, adopted: _Batches, abort: dict[str, object]
) -> set[int]:
    """Give back the batches ``ABORT`` names; say ``RELEASED`` (the old one resumes them then).

    With them go the subscriptions browsers changed while this process
    served them: the old one resumes those rather than the cut's.
    Returns the batch numbers.

    Raises:
        HandoffError: the body is not a list of batches.
    """
    resumed = resumed_of(abort)
    changed = _changed_keys(node, adopted, resumed)  # read before the hub forgets them
    unadopted = [
        (number, index)
        for number in resumed
        for index in (adopted[number].unadopted if number in adopted else ())
    ]
    _give_back(adopted, resumed)
    with contextlib.suppress(HandoffError, TimeoutError):
        channel.send(Kind.RELEASED, released_body(resumed, changed, unadopted))
        # It is waiting for it: sent at once.
        async with asyncio.timeout(node.config.limits.handoff_answer_seconds):
            await channel.flush()
    return resumed


def _changed_keys(node: Node, adopted: _Batches, batches: set[int]) -> dict[Place, frozenset[str]]:
    """The keys of each connection in ``batches`` that changed its subscriptions here."""
    changed = {}
    for number in batches:
        for one in adopted[number].adopted if number in adopted else ():
            # One closed here says nothing: the old process finds it closed too.
            if one.connection.is_open and (keys := node.hub.keys_of(one.connection)) != one.keys:
                changed[number, one.index] = keys
    return changed


def _give_back(adopted: _Batches, batches: set[int] | None) -> None:
    """Drop this process' descriptor of the connections in ``batches`` (None: all)."""
    given = 0
    for number, batch in adopted.items():
        if batches is None or number in batches:
            for one in batch.adopted:
                one.connection.release()
            given += len(batch.adopted)
    log.error("the handoff failed: %d adopted browser connections left to the old process", given)


async def _adopt_batch(
    node: Node, channel: Channel, body: dict[str, object], fds: list[int]
) -> _Batch:
    """Serve one batch of passed browser sockets here; acknowledge it; return them.

    Raises:
        HandoffError: the batch is unreadable; none of it was served here.
    """
    records = body.get("connections")
    try:
        if not isinstance(records, list) or len(records) != len(fds):
            raise HandoffError("a batch whose records and sockets do not match")
        # Every record is read before any socket is served: a bad one fails the
        # batch whole, and none of its sockets is left served here unknown.
        states = [ConnectionState.from_json(raw) for raw in records]
    except HandoffError:
        for fd in fds:
            os.close(fd)
        raise
    listeners = node.client_listeners
    batch = _Batch([], [])
    for index, (state, fd) in enumerate(zip(states, fds, strict=True)):
        try:
            if not 0 <= state.listener < len(listeners):
                os.close(fd)
                raise OSError(f"no client listener {state.listener} here")
            connection = await adopt(listeners[state.listener], state, fd)
        except OSError as exc:
            log.warning("could not adopt a browser connection from %s: %s", state.address, exc)
            batch.unadopted.append(index)
            continue
        batch.adopted.append(_Adopted(index, frozenset(state.keys), connection))
    count = len(batch.adopted)
    node.adopted += count
    log.debug("adopted a batch of %d browser connections", count)
    # The old process may have given up meanwhile: what it sent before it closed says so.
    with contextlib.suppress(HandoffError):
        channel.send(Kind.ADOPTED, {"batch": body.get("batch"), "count": count})
    return batch
