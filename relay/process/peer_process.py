"""Whether a process has exited, seen through a pidfd; and a kill that cannot hit a reused pid.

A channel that ends before the handoff is done means one of two things: the
old process gave up and serves again, or it died. Only the process table
tells them apart, and a pid alone cannot (a dead child stays a zombie, whose
pid still answers ``kill(pid, 0)``, until its parent reaps it); a pidfd
becomes readable once the process has exited, zombie or not. Each side of
a handoff asks it of the other, and kills the other through it when that
one hangs (``relay.node.handoff_abort``, ``relay.node.handoff_take``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import struct

#: ``struct ucred``: pid, uid, gid.
_UCRED = struct.Struct("3i")


def peer_pid(sock: socket.socket) -> int:
    """The pid of the process at the other end of the connected unix socket ``sock``."""
    pid, _uid, _gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return int(pid)


class WatchedProcess:
    """A process watched for its exit; open it while it runs (``close`` when done)."""

    def __init__(self, pid: int) -> None:
        """Open a pidfd on ``pid``; a process already gone counts as exited."""
        self.pid = pid
        self._gone = False
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._gone = True
        except OSError:
            pass  # no pidfd here (kernel < 5.3): whether it exited stays unknown

    async def exited(self, within: float) -> bool | None:
        """Whether the process has exited, waiting up to ``within`` seconds for it.

        The wait covers the moment between a dying process closing its
        descriptors (which ends the channel) and the kernel marking it exited.
        Returns None when it cannot be known.
        """
        if self._gone:
            return True
        if self._pidfd is None:
            return None
        if select.select([self._pidfd], [], [], 0)[0]:
            return True  # exited already: no wait, even with ``within`` 0
        loop = asyncio.get_running_loop()
        ended = asyncio.Event()
        loop.add_reader(self._pidfd, ended.set)
        try:
            async with asyncio.timeout(within):
                await ended.wait()
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(self._pidfd)
        return True

    def kill(self) -> bool:
        """Send SIGKILL through the pidfd (never to a pid reused since); whether it was sent.

        False when it cannot be sent safely (no pidfd) or the process is gone.
        """
        if self._gone or self._pidfd is None:
            return False
        try:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except ProcessLookupError:
            self._gone = True
            return False
        return True

    def close(self) -> None:
        """Close the pidfd. Idempotent."""
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None
