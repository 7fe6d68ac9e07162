"""Serving with a handoff socket: take over from the node there first if asked, then wait.

The process' whole life around ``relay.node.handoff``: what ``relay serve
--handoff-socket PATH [--take-over]`` runs, a single-process node or one
worker of a ``--workers`` node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from relay.config import Config
from relay.errors import StartupError
from relay.listeners.movable import MovableConnection
from relay.node.handoff import HandoffPoint
from relay.node.handoff_take import adopt_all, take_over
from relay.node.node import Node
from relay.process.pidfile import PidFile
from relay.workers.plan import WorkerRole

log = logging.getLogger("relay.handoff")


async def _unless_stopped(
    work: Awaitable[object], shutdown_trigger: Callable[[], Awaitable[object]]
) -> bool:
    """Run ``work`` to its end unless the stop signal comes first: whether it ended.

    A successor stopped in the middle of a take-over (an operator's SIGTERM,
    a supervisor's deadline) must not finish it: the old process would exit
    and this one stop right after, taking the node down. Cancelled, the take-
    over ends the way a successor's exit does: the old process takes back
    what it handed over and serves on.
    """
    working = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(shutdown_trigger())
    try:
        await asyncio.wait({working, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if working.done():
        working.result()  # its failure, if it failed
        return True
    working.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await working
    return False


def _write_taken_over(pidfile: PidFile) -> None:
    """Write this process's pid at the end of a take-over; a failure is logged, not fatal.

    The old process is gone or exiting by now: stopping here would leave no
    one serving, for the sake of a file.
    """
    try:
        pidfile.take_over()
    except StartupError as exc:
        log.error("%s; serving on without it", exc)


async def serve_handing_over(
    config: Config,
    path: str,
    *,
    take_over_first: bool,
    role: WorkerRole | None = None,
    shutdown_trigger: Callable[[], Awaitable[object]],
    on_ready: Callable[[Node], None] | None = None,
    start: Callable[[Node], Awaitable[None]] = Node.start,
    pidfile: PidFile | None = None,
) -> None:
    """``serve`` with a handoff socket: take over first if asked, then wait for a successor.

    With a ``role`` this process is one worker of a ``--workers`` node (the
    supervisor gives each its own socket). ``start`` starts the node when it
    takes over from no one (``relay.node.restart``'s). ``pidfile``: the
    node's; taking over, it is written once the handoff is done (until then
    the old process may serve on, and the file names it); it is left to a
    successor that writes it.

    Raises:
        StartupError: a listener could not start, there is nothing to take
            over, or the pidfile names a live relay other than the old process.
    """
    stop = asyncio.Event()
    if take_over_first:
        node, channel, resumption = await take_over(config, path, role, pidfile)
        try:
            if not await _unless_stopped(adopt_all(node, channel, resumption), shutdown_trigger):
                log.warning(
                    "asked to stop while taking over: giving the browsers back to the old "
                    "process, which serves on"
                )
                node.hurry()
                await node.stop()
                return
        except BaseException:
            # Those it adopted and still holds reconnect at once, to the old process
            # if it serves again; this process must not serve beside it.
            node.hurry()
            await node.stop()
            raise
        finally:
            channel.close()
        if pidfile is not None:
            _write_taken_over(pidfile)
    else:
        node = Node(config, connection_factory=MovableConnection, role=role)
        try:
            await start(node)
        except BaseException:
            # It may have started listeners, or adopted browsers from systemd
            # (``relay.node.restart``): they get 1001 rather than a dead socket.
            await node.stop()
            raise
    point = HandoffPoint(node, path, on_done=stop.set, pidfile=pidfile)
    try:
        point.start()
        if on_ready is not None:
            on_ready(node)
        trigger = asyncio.ensure_future(shutdown_trigger())
        handed = asyncio.ensure_future(stop.wait())
        await asyncio.wait({trigger, handed}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (trigger, handed):
            waiter.cancel()
    finally:
        point.close(unlink=not stop.is_set())
        await node.stop()
