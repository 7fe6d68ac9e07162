"""The sd_notify side of systemd's file descriptor store, against a test notify socket."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.links.fdstore_wire import FdStoreError
from relay.process.fdstore import FdStore, memfd_with, read_memfd, take_passed


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[socket.socket]:
    """The notify socket as systemd holds it, at a path."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_the_store_is_used_only_when_systemd_keeps_one() -> None:
    assert FdStore.of({}) is None
    assert FdStore.of({"NOTIFY_SOCKET": "@n"}) is None
    assert FdStore.of({"NOTIFY_SOCKET": "@n", "FDSTORE": "0"}) is None
    assert FdStore.of({"FDSTORE": "10"}) is None
    store = FdStore.of({"NOTIFY_SOCKET": "@n", "FDSTORE": "10"})
    assert store is not None
    assert store.capacity == 10


def test_descriptors_are_stored_with_their_name(notify: socket.socket, tmp_path: Path) -> None:
    store = FdStore(str(tmp_path / "notify"), 1000)
    read_end, write_end = os.pipe()
    try:
        store.store("relay-browser", [read_end] * 300)
        sizes = []
        for _ in range(2):
            data, fds, _flags, _address = socket.recv_fds(notify, 4096, 300)
            assert data == b"FDSTORE=1\nFDNAME=relay-browser"
            sizes.append(len(fds))
            for fd in fds:
                os.close(fd)
        assert sizes == [253, 47]
        store.remove(["relay-state"])
        assert notify.recv(4096) == b"FDSTOREREMOVE=1\nFDNAME=relay-state"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_barrier_returns_once_systemd_closed_its_pipe(
    notify: socket.socket, tmp_path: Path
) -> None:
    store = FdStore(str(tmp_path / "notify"), 1000)

    def systemd() -> None:
        data, fds, _flags, _address = socket.recv_fds(notify, 4096, 1)
        assert data == b"BARRIER=1"
        os.close(fds[0])

    answer = threading.Thread(target=systemd)
    answer.start()
    assert store.barrier(timeout=5)
    answer.join()
    # Nobody answers: the barrier gives up after its timeout, and says so.
    assert not store.barrier(timeout=0.01)
    assert not FdStore(str(tmp_path / "absent"), 1).barrier(timeout=0.01)


def test_a_memfd_reads_back_whole_and_within_its_limit() -> None:
    data = os.urandom(3 << 20)
    fd = memfd_with("relay-state", data)
    try:
        assert read_memfd(fd, len(data)) == data
        assert read_memfd(fd, len(data)) == data  # pread: the offset does not move
        with pytest.raises(FdStoreError, match="over"):
            read_memfd(fd, len(data) - 1)
    finally:
        os.close(fd)
    read_end, write_end = os.pipe()  # not a file: another program's descriptor
    try:
        with pytest.raises(FdStoreError, match="cannot be read"):
            read_memfd(read_end, 10)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_descriptors_passed_to_another_process_are_not_taken() -> None:
    environ = {"LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "relay-browser:x"}
    assert not take_passed(environ)
    assert environ == {}  # and no child of relay inherits them
