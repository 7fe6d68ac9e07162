"""The pidfile: who may be named in it when a successor takes over, and who removes it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.errors import StartupError
from relay.process.pidfile import PidFile


@pytest.fixture
def other_relay() -> Iterator[int]:
    """The pid of a live process whose command line says relay (taken for a running node)."""
    with subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", "relay"], stdin=subprocess.PIPE
    ) as process:
        try:
            yield process.pid
        finally:
            process.kill()


def test_a_successor_may_find_the_process_it_takes_over_from_named(
    tmp_path: Path, other_relay: int
) -> None:
    path = tmp_path / "relay.pid"
    path.write_text(f"{other_relay}\n")
    pidfile = PidFile(str(path))
    pidfile.check_take_over(other_relay)  # the old process: accepted
    with pytest.raises(StartupError, match=f"already running as pid {other_relay}"):
        pidfile.check_take_over(other_relay + 1)  # another: refused, as at any start
    with pytest.raises(StartupError, match="already running"):
        pidfile.check_take_over(None)  # unknown: refused
    pidfile.take_over()
    assert path.read_text() == f"{os.getpid()}\n"
    assert [entry.name for entry in tmp_path.iterdir()] == ["relay.pid"]  # no temporary left


def test_a_pidfile_handed_to_a_successor_writing_it_is_not_removed(tmp_path: Path) -> None:
    """The successor writes it as this process exits: a read-then-remove could remove its file."""
    pidfile = PidFile(str(tmp_path / "relay.pid"))
    pidfile.acquire()
    pidfile.hand_over(str(tmp_path / "." / "relay.pid"))
    pidfile.release()
    assert pidfile.path.exists()


def test_a_pidfile_the_successor_does_not_write_is_removed_as_usual(tmp_path: Path) -> None:
    for successor in (str(tmp_path / "other.pid"), None):
        pidfile = PidFile(str(tmp_path / "relay.pid"))
        pidfile.acquire()
        pidfile.hand_over(successor)
        pidfile.release()
        assert not pidfile.path.exists()


def test_a_pidfile_naming_the_successor_is_not_removed(tmp_path: Path, other_relay: int) -> None:
    pidfile = PidFile(str(tmp_path / "relay.pid"))
    pidfile.acquire()
    pidfile.path.write_text(f"{other_relay}\n")
    pidfile.release()
    assert pidfile.path.read_text() == f"{other_relay}\n"


def test_a_symbolic_link_stays_and_what_it_leads_to_is_written(tmp_path: Path) -> None:
    target = tmp_path / "real" / "relay.pid"
    target.parent.mkdir()
    link = tmp_path / "relay.pid"
    link.symlink_to(target)
    PidFile(str(link)).acquire()
    assert link.is_symlink()
    assert target.read_text() == f"{os.getpid()}\n"
