"""The pidfile Aphlict's launcher and init scripts use to find a running node."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from relay.errors import StartupError

log = logging.getLogger("relay.process")

#: A live pid whose command line holds one of these is taken for a running node.
NODE_MARKS = ("relay", "aphlict")


class PidFile:
    """Writes this process's pid at start and removes it at exit."""

    def __init__(self, path: str) -> None:
        """Manage the pidfile at ``path``."""
        self.path = Path(path)

    def acquire(self) -> None:
        """Write the pid, refusing if another live process holds the file.

        Raises:
            StartupError: another relay is running, or the file cannot be written.
        """
        running = self.running_node()
        if running is not None:
            raise StartupError(running)
        other = self._recorded_pid()
        if other is not None and other != os.getpid() and _alive(other):
            # After a reboot the number names whatever program got it since.
            log.warning(
                "pidfile: %s names pid %d, which runs another program now; taking the file over",
                self.path,
                other,
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(f"{os.getpid()}\n")
        except OSError as exc:
            raise StartupError(
                f"pidfile: cannot write {self.path}: {exc.strerror or exc}"
            ) from None

    def running_node(self) -> str | None:
        """Why ``acquire`` would refuse for a node running now, or None; changes nothing.

        check-config's question: the file names another live relay (or Aphlict).
        """
        other = self._recorded_pid()
        if other is None or other == os.getpid() or not _alive(other) or not _runs_a_node(other):
            return None
        return f"pidfile: {self.path} says relay is already running as pid {other}"

    def release(self) -> None:
        """Remove the pidfile if it is still ours."""
        if self._recorded_pid() == os.getpid():
            self.path.unlink(missing_ok=True)

    def _recorded_pid(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _runs_a_node(pid: int) -> bool:
    """Whether live ``pid`` runs relay (or Aphlict, whose config this may share).

    Judged by its command line; where that cannot be read (another user's
    process under hidepid, no /proc), it is taken for one, as before.
    """
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().lower()
    except OSError:
        return True
    return any(mark.encode() in command for mark in NODE_MARKS)
