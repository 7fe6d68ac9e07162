"""A process watched through a pidfd: has it exited; kill it (``relay.process.peer_process``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from relay.process.peer_process import WatchedProcess, peer_pid


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


async def test_a_running_process_has_not_exited() -> None:
    with _sleeper() as child:
        watched = WatchedProcess(child.pid)
        try:
            assert await watched.exited(0.05) is False
        finally:
            watched.close()
            child.kill()


async def test_a_killed_process_has_exited_even_before_it_is_reaped() -> None:
    with _sleeper() as child:
        watched = WatchedProcess(child.pid)
        try:
            child.kill()  # a zombie until wait(): kill(pid, 0) would still succeed
            assert await watched.exited(5.0) is True
        finally:
            watched.close()


async def test_a_process_reaped_before_it_was_watched_has_exited() -> None:
    with _sleeper() as child:
        child.kill()
        child.wait()
        watched = WatchedProcess(child.pid)
        assert await watched.exited(0.0) is True
        watched.close()


def test_peer_pid_is_the_other_end_of_a_unix_socket() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        assert peer_pid(ours) == os.getpid()


async def test_a_hung_process_is_killed_through_its_pidfd() -> None:
    with _sleeper() as child:
        watched = WatchedProcess(child.pid)
        try:
            child.send_signal(signal.SIGSTOP)  # hung: a stopped process still dies of SIGKILL
            assert watched.kill() is True
            assert await watched.exited(5.0) is True
            assert child.wait() == -signal.SIGKILL
            assert watched.kill() is False  # gone: nothing sent
        finally:
            watched.close()
