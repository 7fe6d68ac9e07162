"""The pidfile Aphlict's launcher and init scripts use to find a running node.

In a handoff (``relay.node.handoff``) the file passes from the old process
to its successor: the successor accepts a file naming the very process it
takes over from, and writes its own pid once the handoff is done; the old
process, exiting then, leaves the file to it. Every write replaces the file
whole (a temporary file renamed over it), so a reader never finds it empty
or half-written.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from relay.errors import StartupError

log = logging.getLogger("relay.process")

#: A live pid whose command line holds one of these is taken for a running node.
NODE_MARKS = ("relay", "aphlict")


class PidFile:
    """Writes this process's pid at start (or at the end of a take-over) and removes it at exit."""

    def __init__(self, path: str) -> None:
        """Manage the pidfile at ``path``."""
        self.path = Path(path)
        #: Handed to a successor that writes the same file: never removed here.
        self._handed_over = False

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
        self._write()

    def running_node(self, *, besides: int | None = None) -> str | None:
        """Why ``acquire`` would refuse for a node running now, or None; changes nothing.

        check-config's question: the file names another live relay (or
        Aphlict). ``besides``: a pid that may be named (the process a
        successor takes over from, see ``check_take_over``).
        """
        other = self._recorded_pid()
        if (
            other is None
            or other in (os.getpid(), besides)
            or not _alive(other)
            or not _runs_a_node(other)
        ):
            return None
        return f"pidfile: {self.path} says relay is already running as pid {other}"

    def check_take_over(self, old_pid: int | None) -> None:
        """Refuse to take over from ``old_pid`` if the file names another live relay.

        A successor starts while the process it takes over from holds the
        file; it writes it only once the handoff is done (``take_over``), so
        that a handoff that fails leaves the file naming the old process,
        which serves on. ``old_pid`` None: not known (no ``SO_PEERCRED``),
        and a live relay named in the file refuses, as at any start.

        Raises:
            StartupError: the file names a live relay other than ``old_pid``.
        """
        running = self.running_node(besides=old_pid)
        if running is not None:
            raise StartupError(running)

    def take_over(self) -> None:
        """Write this process's pid at the end of a handoff, replacing the old process's.

        Raises:
            StartupError: the file cannot be written.
        """
        self._write()
        log.info("pidfile: %s names this process (pid %d) now", self.path, os.getpid())

    def hand_over(self, successor_path: str | None) -> None:
        """A handoff is done: leave the file to a successor that writes it (``successor_path``).

        Removed at this process's exit, it might be the successor's already
        (it writes once the handoff is done, while this process exits): no
        read-then-remove is safe against that. A successor that writes
        another file (or none) leaves this one to ``release`` as usual.
        """
        if successor_path is not None and _same_path(self.path, Path(successor_path)):
            self._handed_over = True

    def release(self) -> None:
        """Remove the pidfile if it is still ours (and was not handed to a successor)."""
        if not self._handed_over and self._recorded_pid() == os.getpid():
            self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        """Replace the file whole with this process's pid, its directory created.

        A symbolic link stays, and what it leads to is written. Where no
        temporary file can be made beside it (a writable file in a directory
        this user cannot write), the file is written in place, as before.

        Raises:
            StartupError: the file cannot be written.
        """
        content = f"{os.getpid()}\n"
        target = Path(os.path.realpath(self.path))
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                temporary.write_text(content)
            except PermissionError:
                target.write_text(content)
            else:
                os.replace(temporary, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise StartupError(
                f"pidfile: cannot write {self.path}: {exc.strerror or exc}"
            ) from None

    def _recorded_pid(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None


def _same_path(one: Path, other: Path) -> bool:
    """Whether two paths name the same file (relative ones from this process's directory)."""
    return one.resolve() == other.resolve()


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
