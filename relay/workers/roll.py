"""Replacing a ``--workers`` node's workers in turn with new code: SIGUSR2 to the supervisor.

Each worker waits for a successor at a handoff socket of its own in the
supervisor's private run directory (``handoff-<index>.sock``). On SIGUSR2
the supervisor goes through the slots in order. For each, it starts the
slot's successor: ``relay serve`` with the worker's own arguments plus
``--take-over``, with the interpreter and relay package installed now. The
successor takes the worker's listening sockets, browser connections and
admin sockets over (``relay.node.handoff``; the node shares its ports with
``SO_REUSEPORT``, and a passed socket stays in the kernel's group, so the
other workers go on as they were), then reports ``MAINPID=<its pid>`` and
``READY=1`` on the slot's notify socket (or the old worker exits cleanly,
which it does only after its handoff). The supervisor then adopts it into
the slot: its exit, restarts and watchdog are the slot's from now on, and
the old worker's exit, once it has handed everything over, is not a crash.
The slot counts as ready (a reload's SIGHUP reaches it) only once the
successor said ``READY=1``: it handles SIGHUP only from then on. Once the
old worker has exited and the successor is ready, the next slot follows.

A successor that exits, or is not ready within ``take_over_seconds`` (at
least ``TAKE_OVER_TIMEOUT``), is stopped and logged; the old worker keeps
serving what it still holds (as a single process does after a failed
handoff) and the roll stops there: the workers not replaced yet keep their
code, and another SIGUSR2 starts over.
A node stopped during a roll stops the successor under way with the workers.

The supervisor itself keeps running the code it started with: only the
workers are replaced. Upgrading the supervisor is a restart of the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence

from relay.config import LimitsConfig
from relay.workers.slot import Slot, WorkerProcess

log = logging.getLogger("relay.workers")

#: How long a successor may take to take its worker's browsers over and report ready, at
#: least (``take_over_seconds``).
TAKE_OVER_TIMEOUT = 60.0
#: Beyond the old worker's longest waits, for the moving itself.
TAKE_OVER_MARGIN = 15.0
#: How long the old worker may take to exit once its successor is ready, before it is killed.
OLD_EXIT_TIMEOUT = 10.0
#: How long a successor may take to say ``READY=1`` once the old worker exited after its handoff.
READY_SECONDS = 5.0

#: Starts ``relay serve --take-over`` for a slot (``Supervisor._start_worker``).
StartSuccessor = Callable[..., Awaitable[WorkerProcess]]


def take_over_seconds(limits: LimitsConfig) -> float:
    """How long a successor may take over from a worker running with ``limits``.

    The old worker waits up to ``handshake_seconds`` for browsers in their
    handshake, then for admin requests on their way, and its successor for
    each answer up to ``handoff_answer_seconds``: a deadline shorter than
    those stopped a successor that was doing its job (and, before a stopped
    successor gave the node back, took the worker's browsers with it).
    """
    waits = limits.handshake_seconds + limits.admin_header_seconds
    return max(TAKE_OVER_TIMEOUT, waits + limits.handoff_answer_seconds + TAKE_OVER_MARGIN)


async def roll(
    slots: Sequence[Slot],
    start: StartSuccessor,
    clock: Callable[[], float],
    deadline: float = TAKE_OVER_TIMEOUT,
) -> int:
    """Replace each slot's worker in turn; stop at the first that fails. Returns how many.

    ``deadline``: seconds each successor may take over in (``take_over_seconds``).
    """
    for done, slot in enumerate(slots):
        if not await replace(slot, start, clock, deadline):
            log.error(
                "upgrade of the workers stopped at worker %d: %d of %d replaced; "
                "the others keep running their code",
                slot.index,
                done,
                len(slots),
            )
            return done
    log.info("all %d workers replaced by the new code", len(slots))
    return len(slots)


async def replace(
    slot: Slot,
    start: StartSuccessor,
    clock: Callable[[], float],
    deadline: float = TAKE_OVER_TIMEOUT,
) -> bool:
    """Hand ``slot``'s worker over to a successor and adopt it into the slot; True if done."""
    old = slot.process
    if old is None or old.returncode is not None or not slot.ready:
        log.error("worker %d is not serving now: not replaced", slot.index)
        return False
    slot.rolling = asyncio.get_running_loop().create_future()
    try:
        slot.main_pid = None
        try:
            successor = await start(slot, take_over=True)
        except OSError as exc:
            log.error("worker %d: cannot start the new code: %s", slot.index, exc)
            return False
        slot.successor = successor
        log.info(
            "worker %d (pid %d): started the new code (pid %d) to take over",
            slot.index,
            old.pid,
            successor.pid,
        )
        if not await _taken_over(slot, successor, old, deadline):
            await _stop(successor)
            slot.successor = None
            return False
        # The slot's from now on: the old one's exit is expected. (Until here, a
        # stop of the node, which cancels the roll, stops the successor too.)
        slot.process, slot.successor = successor, None
        slot.started_at = slot.last_ping = clock()
        slot.ready = False
        # Ready once it said so: before that it may not handle SIGHUP yet (a reload
        # right after the roll killed it), and it says so just after the old one's exit.
        slot.ready = await _said_ready(slot, successor)
        try:
            await asyncio.wait_for(asyncio.shield(old.wait()), OLD_EXIT_TIMEOUT)
        except TimeoutError:
            log.warning(
                "worker %d: the old process (pid %d) did not exit in %.0f s after its "
                "handoff; killing it",
                slot.index,
                old.pid,
                OLD_EXIT_TIMEOUT,
            )
            with contextlib.suppress(ProcessLookupError):
                old.kill()
            await old.wait()
        log.info("worker %d replaced: pid %d -> pid %d", slot.index, old.pid, successor.pid)
        return True
    finally:
        rolling, slot.rolling = slot.rolling, None
        rolling.set_result(None)


async def _taken_over(
    slot: Slot, successor: WorkerProcess, old: WorkerProcess, deadline: float
) -> bool:
    """Wait until ``successor`` has taken over; False if it ends or stalls first.

    It has once it reports ready on the slot's socket, or once the old worker
    exited with status 0 while it runs: the old worker exits so only after
    the successor acknowledged the end of the handoff (or on a stop signal,
    which ends the roll anyway), so a late or lost ``READY=1`` does not stall
    the roll.
    """
    ended = asyncio.ensure_future(successor.wait())
    left = asyncio.ensure_future(old.wait())
    try:
        async with asyncio.timeout(deadline):
            while slot.main_pid != successor.pid:
                if left.done() and left.result() == 0 and not ended.done():
                    log.info(
                        "worker %d: the old process exited after its handoff; the new code "
                        "(pid %d) serves",
                        slot.index,
                        successor.pid,
                    )
                    return True
                if ended.done():
                    log.error(
                        "worker %d: the new code (pid %d) exited with status %d before it "
                        "took over; the worker keeps serving",
                        slot.index,
                        successor.pid,
                        ended.result(),
                    )
                    return False
                slot.readied.clear()
                readied = asyncio.ensure_future(slot.readied.wait())
                waiting = {readied, ended} | ({left} if not left.done() else set())
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                readied.cancel()
        # Its READY=1 may have come just before it exited: a successor gone is not adopted.
        if successor.returncode is not None:
            log.error(
                "worker %d: the new code (pid %d) exited with status %d as it took over; "
                "the worker keeps serving",
                slot.index,
                successor.pid,
                successor.returncode,
            )
            return False
        return True
    except TimeoutError:
        log.error(
            "worker %d: the new code (pid %d) did not take over within %.0f s; stopping it, "
            "the worker keeps serving",
            slot.index,
            successor.pid,
            deadline,
        )
        return False
    finally:
        ended.cancel()
        left.cancel()


async def _said_ready(slot: Slot, successor: WorkerProcess) -> bool:
    """Wait (at most ``READY_SECONDS``) for ``successor``'s ``READY=1``; whether it came.

    One that comes later still makes the slot ready (``Supervisor.notice``).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(READY_SECONDS):
            while slot.main_pid != successor.pid:
                slot.readied.clear()
                await slot.readied.wait()
    if slot.main_pid != successor.pid:
        log.warning(
            "worker %d: the new code (pid %d) has not said it is ready %.0f s after taking over",
            slot.index,
            successor.pid,
            READY_SECONDS,
        )
        return False
    return True


async def _stop(process: WorkerProcess) -> None:
    """Stop a successor that did not take over (SIGTERM, then SIGKILL)."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), OLD_EXIT_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
