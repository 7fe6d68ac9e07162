"""Starting a ``--workers`` node's workers: forked from a template process that imported their code.

A worker exec'd anew imports aiohttp, pydantic, redis-py, asyncio and ssl
for itself and keeps ~45 MiB of private memory for them. So the supervisor
starts one **template** process (``python -m relay.cli.template``, exec'd
from the code on disk) that imports the worker's code, freezes it out of the
garbage collector (``gc.freeze()``: a collection would write to every
object's header and unshare its page) and runs no event loop. For each
worker the supervisor asks the template over a socket pair; the template
forks, and the child becomes the worker: it runs what ``relay serve`` runs
for a worker, and shares the template's pages until it writes to them.

The design points:

- **Whose child a worker is.** The supervisor makes itself a child
  subreaper (``PR_SET_CHILD_SUBREAPER``); the template forks twice and the
  middle process exits at once, so the worker is re-parented to the
  supervisor. The template answers with the worker's pid only once it has
  reaped the middle process: by then the worker is the supervisor's child,
  which alone may reap it, so its pid cannot be reused and ``pidfd_open``
  names it. ``ForkedWorker`` watches that pidfd on the event loop and reaps
  with ``waitpid``; it has the methods the supervisor used on the
  ``asyncio.subprocess.Process`` it had, so restarts, the watchdog, reloads
  and the roll are the same code.
- **Dying with the supervisor.** The worker waits until its middle parent has
  exited: the middle opens a pidfd of itself before it forks, and that
  pidfd becomes readable only after the kernel re-parented the middle's
  children (a pid alone could be reused by then). Then the worker sets
  ``PR_SET_PDEATHSIG`` (it would fire at the middle's exit if set before),
  then checks that its parent is the supervisor (had the supervisor died in
  between, or were it no subreaper, it exits with 1, as a failed worker).
- **Descriptors.** The template inherits stdin (``/dev/null``), stdout and
  stderr, and its end of the socket pair (held as a bare number, owned by no
  Python object), and whatever else the supervisor's loop leaves inheritable
  (uvloop's spawning keeps a few duplicates of stdio). A worker closes every
  descriptor above 2 at once but the middle's pidfd (closed once it has
  served), so it holds neither the control socket nor anything the template
  held; it opens its own (notify socket, listeners, broker) as an exec'd
  worker does.
- **Environment.** A worker sets its own ``NOTIFY_SOCKET`` and
  ``WATCHDOG_USEC``, drops ``WATCHDOG_PID``, restores the signal handlers a
  new interpreter has, and takes its role from its argv as before.
- **Which template.** A crash or watchdog restart forks from the current
  template: the code the node started with (or its last roll). A roll
  (SIGUSR2) starts a new template from the code on disk first, and the
  successors fork from it. If that one does not start (broken code on
  disk), the current template stays for restarts, and the roll's
  successors are exec'd: they fail as the code on disk does, and the roll
  stops as it did before.
- **The template dying.** Asking a dead template fails at once (its socket
  ends); a new one is started for that same request. A worker restart is
  never blocked on it: if no template can start (the code on disk is
  broken), the worker is exec'd as ``relay serve`` as before, and that is
  logged. A template that fails to answer within ``ASK_TIMEOUT`` is killed
  and treated the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
from collections.abc import Sequence
from pathlib import Path

import orjson

from relay.workers.plan import handoff_socket, notify_socket
from relay.workers.slot import Slot, WorkerProcess

log = logging.getLogger("relay.workers")

#: Time a template gets to import the worker's code and say it is ready.
TEMPLATE_START_TIMEOUT = 30.0
#: Time a template gets to fork a worker and answer with its pid.
ASK_TIMEOUT = 10.0
#: What the template says once it has imported everything.
TEMPLATE_READY = b"ready"

#: The template's process name (``comm``: ``ps -o comm``, ``top``); workers name themselves.
TEMPLATE_NAME = "relay-template"

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, value: int | bytes) -> bool:
    """Call ``prctl(option, value)``; False where it fails (not Linux)."""
    try:
        return int(ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def set_process_name(name: str) -> None:
    """Name this process as ``ps -o comm`` and ``top`` show it (15 bytes at most)."""
    prctl(_PR_SET_NAME, name.encode()[:15])


def die_with_parent() -> None:
    """In a child the supervisor starts: get SIGTERM if the supervisor dies, so none is orphaned."""
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ForkedWorker:
    """A worker the template forked, re-parented to the supervisor: watched through a pidfd.

    Offers what the supervisor uses of ``asyncio.subprocess.Process``.
    """

    def __init__(self, pid: int) -> None:
        """Watch ``pid``, which must be this process's child and not reaped yet.

        Raises:
            OSError: no such process (``pidfd_open`` failed).
        """
        self.pid = pid
        self.returncode: int | None = None
        self._loop = asyncio.get_running_loop()
        self._pidfd = os.pidfd_open(pid)
        self._done: asyncio.Future[int] = self._loop.create_future()
        self._loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # someone else reaped it: its status is lost
            pid, status = self.pid, 255 << 8
        if pid == 0:
            return
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self.returncode = os.waitstatus_to_exitcode(status)
        self._done.set_result(self.returncode)

    async def wait(self) -> int:
        """Wait for the worker to exit; its status (negative: the signal that killed it)."""
        return await asyncio.shield(self._done)

    def send_signal(self, number: int) -> None:
        """Send a signal; raises ProcessLookupError once the worker has been reaped."""
        if self.returncode is not None:
            raise ProcessLookupError(self.pid)
        signal.pidfd_send_signal(self._pidfd, number)

    def terminate(self) -> None:
        """Send SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL."""
        self.send_signal(signal.SIGKILL)


class _Template:
    """One running template process and the supervisor's end of its socket pair."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.process = process
        self.reader = reader
        self.writer = writer
        #: A request was cancelled or failed: its answer may still come, so ask no more.
        self.broken = False

    async def fork(self, index: int, argv: Sequence[str], env: dict[str, str]) -> int:
        """Ask for worker ``index`` running ``argv``; its pid. Raises OSError or TimeoutError."""
        request = {"index": index, "argv": list(argv), "env": env}
        self.broken = True
        self.writer.write(orjson.dumps(request) + b"\n")
        async with asyncio.timeout(ASK_TIMEOUT):
            await self.writer.drain()
            line = await self.reader.readline()
        self.broken = False
        if not line:
            raise ConnectionError("the template process ended")
        answer = orjson.loads(line)
        if "pid" not in answer:
            raise OSError(f"the template could not fork: {answer.get('error')}")
        return int(answer["pid"])

    async def stop(self) -> None:
        """Close its socket (it exits at that) and make sure it is gone."""
        self.writer.close()
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        await self.process.wait()


class Spawner:
    """Starts a slot's worker or successor: from the template, else by exec (logged)."""

    def __init__(
        self, python: str, path: str, directory: Path, *, debug: bool, watchdog: float
    ) -> None:
        """Prepare; the first template starts with the first worker asked for."""
        self._python = python
        self._path = path
        self._directory = directory
        self._debug = debug
        self._watchdog = watchdog
        self._template: _Template | None = None
        #: Set when a roll's new template did not start: its successors are exec'd.
        self._exec_successors = False
        self._lock = asyncio.Lock()
        # Forked workers are re-parented here, where they can be watched and reaped.
        self._subreaper = prctl(_PR_SET_CHILD_SUBREAPER, 1)

    @property
    def template_pid(self) -> int | None:
        """The running template's pid, if one runs."""
        template = self._template
        if template is None or template.process.returncode is not None:
            return None
        return template.process.pid

    async def start(self, slot: Slot, *, take_over: bool = False) -> WorkerProcess:
        """Start ``relay serve`` for ``slot``: its worker, or (``take_over``) its successor."""
        argv = self._argv(slot, take_over)
        env = {
            "NOTIFY_SOCKET": str(notify_socket(self._directory, slot.index)),
            "WATCHDOG_USEC": str(int(self._watchdog * 1_000_000)),
        }
        async with self._lock:
            # A template found dead is replaced once; a failed roll's successors are exec'd.
            for _attempt in range(0 if take_over and self._exec_successors else 2):
                template = await self._current()
                if template is None:
                    break
                try:
                    return ForkedWorker(await template.fork(slot.index, argv, env))
                except (OSError, TimeoutError, ValueError) as exc:
                    log.warning(
                        "the template process (pid %d) failed: %s", template.process.pid, exc
                    )
                    await self._drop()
        log.warning("worker %d: no template process; starting it by exec instead", slot.index)
        return await self._exec(argv, env)

    async def renew(self) -> None:
        """Replace the template with one running the code on disk now (a roll's successors).

        If the new one does not start, the current one stays for restarts and
        the successors are exec'd, so they fail (or run) as the code on disk does.
        """
        async with self._lock:
            new = await self._start_template() if self._subreaper else None
            self._exec_successors = new is None
            if new is None:
                log.warning("the new code's template process did not start; the roll execs")
                return
            old, self._template = self._template, new
            if old is not None:
                await old.stop()

    async def close(self) -> None:
        """Stop the template; this process is no subreaper any more (its workers have stopped)."""
        async with self._lock:
            await self._drop()
        if self._subreaper:
            # The process may live on (a test's supervisor): orphans go to init again.
            prctl(_PR_SET_CHILD_SUBREAPER, 0)
            self._subreaper = False

    async def _current(self) -> _Template | None:
        """The running template, started anew if there is none; None if none can start."""
        template = self._template
        if template is not None and template.process.returncode is None and not template.broken:
            return template
        if template is not None:
            code = template.process.returncode
            how = "left a request unanswered" if code is None else f"exited with {code}"
            log.warning(
                "the template process (pid %d) %s; starting a new one", template.process.pid, how
            )
            await self._drop()
        if not self._subreaper:
            return None
        self._template = await self._start_template()
        return self._template

    async def _start_template(self) -> _Template | None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                self._python,
                "-m",
                "relay.cli.template",
                str(theirs.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                preexec_fn=die_with_parent,
            )
        except OSError as exc:
            ours.close()
            log.error("cannot start the template process: %s", exc)
            return None
        finally:
            theirs.close()
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours)
        except OSError as exc:
            log.error("cannot talk to the template process: %s", exc)
            ours.close()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            return None
        template = _Template(process, reader, writer)
        try:
            async with asyncio.timeout(TEMPLATE_START_TIMEOUT):
                line = await reader.readline()
        except TimeoutError:
            line = b""
        if line.strip() != TEMPLATE_READY:
            log.error("the template process (pid %d) did not start", process.pid)
            await template.stop()
            return None
        log.info("template process started as pid %d", process.pid)
        return template

    async def _drop(self) -> None:
        template, self._template = self._template, None
        if template is not None:
            await template.stop()

    def _argv(self, slot: Slot, take_over: bool) -> list[str]:
        """``relay serve``'s arguments for the slot's worker (after ``python -m relay``)."""
        argv = [
            "serve",
            "--config",
            self._path,
            "--worker-dir",
            str(self._directory),
            "--worker-index",
            str(slot.index),
            "--worker-restarts",
            str(slot.generation),
            "--handoff-socket",
            str(handoff_socket(self._directory, slot.index)),
        ]
        if self._debug:
            argv.append("--debug")
        if take_over:
            argv.append("--take-over")
        return argv

    async def _exec(self, argv: list[str], env: dict[str, str]) -> WorkerProcess:
        """The fallback: exec ``python -m relay serve`` as a child of the supervisor."""
        environ = dict(os.environ) | env
        environ.pop("WATCHDOG_PID", None)
        return await asyncio.create_subprocess_exec(
            self._python,
            "-m",
            "relay",
            *argv,
            env=environ,
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
