"""An upgrade the node starts itself: on SIGUSR2, run the new code with ``--take-over``.

Under systemd, ``ExecReload=/bin/kill -USR2 $MAINPID`` makes ``systemctl
reload relay`` an upgrade that disconnects no one: the running node (started
with ``--handoff-socket``) starts ``python -m relay`` with its own arguments
plus ``--take-over``, with the interpreter and package now installed; the
successor takes everything over (``relay.node.handoff``), then tells systemd
``MAINPID=`` its own pid with ``READY=1``, and the old process exits.

A successor that cannot start or exits early leaves this process serving;
its exit status is logged. systemd is told ``RELOADING=1`` when the
successor starts, so ``systemctl reload`` returns only at a ``READY=1``: the
successor's, or this process' own again after a successor that failed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

from relay.process.systemd import Notifier

log = logging.getLogger("relay.handoff")

#: The flag that makes ``relay serve`` take over from the node at its handoff socket.
TAKE_OVER = "--take-over"


def successor_command(argv: Sequence[str], python: str = sys.executable) -> list[str]:
    """The command line of the successor of a node started with ``argv`` (``sys.argv``).

    ``python -m relay`` rather than ``argv[0]``: run as ``python -m relay``,
    ``argv[0]`` is a path to ``__main__.py``, not a command.
    """
    arguments = list(argv[1:])
    if TAKE_OVER not in arguments:
        arguments.append(TAKE_OVER)
    return [python, "-m", "relay", *arguments]


def successor_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """This process' environment for its successor, without ``WATCHDOG_PID``.

    systemd's ``WATCHDOG_PID`` names this process; inherited, it would make
    the successor believe the watchdog is someone else's and never ping it.
    """
    return {name: value for name, value in environ.items() if name != "WATCHDOG_PID"}


class Upgrade:
    """Starts at most one successor at a time and reaps it if it ends while this node serves."""

    def __init__(
        self,
        argv: Sequence[str],
        systemd: Notifier | None = None,
        describe: Callable[[], str] = str,
    ) -> None:
        """Prepare to start the successor of a node started with ``argv``.

        ``systemd`` is told of the upgrade; ``describe`` gives its status line.
        """
        self._command = successor_command(argv)
        self._systemd = systemd
        self._describe = describe
        self._process: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None

    def start(self) -> None:
        """Start the successor, unless one is running; a failure to start is logged."""
        if self._process is not None:
            pid = self._process.pid
            log.warning("an upgrade is under way already (pid %d); SIGUSR2 ignored", pid)
            return
        try:
            # Its output goes where this process' goes (the journal under systemd).
            process = subprocess.Popen(
                self._command, stdin=subprocess.DEVNULL, env=successor_environ(os.environ)
            )
        except OSError as exc:
            log.error("cannot start the new code, this process keeps serving: %s", exc)
            return
        self._process = process
        log.info("received SIGUSR2, started the new code (pid %d) to take over", process.pid)
        if self._systemd is not None:
            self._systemd.reloading()  # until the successor's READY=1 (or ours, if it fails)
        # A pidfd tells the loop when the child ends, without a thread blocked in wait().
        self._pidfd = os.pidfd_open(process.pid)
        asyncio.get_running_loop().add_reader(self._pidfd, self._ended)

    def _ended(self) -> None:
        process, pidfd = self._process, self._pidfd
        assert process is not None
        assert pidfd is not None
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)
        code = process.wait()  # it has ended: reaped at once
        log.warning(
            "the new code (pid %d) exited with status %d; this process keeps serving",
            process.pid,
            code,
        )
        self._process = self._pidfd = None
        if self._systemd is not None:
            self._systemd.ready(self._describe())
