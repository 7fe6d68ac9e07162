"""Kernel receive stamps: the ancillary data parsing, and a real stamped read on loopback."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator

from bench import kstamp


def _timespec(seconds: int, fraction: int) -> bytes:
    return struct.pack("@ll", seconds, fraction)


def test_nanosecond_stamp_is_read() -> None:
    data = [(socket.SOL_SOCKET, kstamp.SO_TIMESTAMPNS, _timespec(1_700_000_000, 123_456_789))]
    assert kstamp.stamp_ns(data) == 1_700_000_000_123_456_789


def test_microsecond_stamp_is_read_in_nanoseconds() -> None:
    data = [(socket.SOL_SOCKET, kstamp.SO_TIMESTAMP, _timespec(1_700_000_000, 654_321))]
    assert kstamp.stamp_ns(data) == 1_700_000_000_654_321_000


def test_no_stamp_other_messages_and_truncated_ones_give_zero() -> None:
    assert kstamp.stamp_ns([]) == 0
    assert kstamp.stamp_ns([(socket.IPPROTO_IP, kstamp.SO_TIMESTAMPNS, _timespec(1, 2))]) == 0
    assert kstamp.stamp_ns([(socket.SOL_SOCKET, kstamp.SO_TIMESTAMPNS, b"\0" * 4)]) == 0
    # The stamp is found after an unrelated message.
    other = (socket.SOL_SOCKET, 1, b"\0" * 16)
    stamp = (socket.SOL_SOCKET, kstamp.SO_TIMESTAMPNS, _timespec(5, 6))
    assert kstamp.stamp_ns([other, stamp]) == 5_000_000_006


def _stamping(sender: socket.socket, receiver: socket.socket) -> bool:
    """Whether a byte sent now arrives stamped (read at once)."""
    sender.sendall(b"w")
    _data, ancillary, _flags, _address = receiver.recvmsg(16, kstamp.ANCILLARY_SIZE)
    return kstamp.stamp_ns(ancillary) != 0


@contextlib.contextmanager
def _stamped_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A loopback TCP connection whose receiving end gets stamped reads."""
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname()) as sender:
        receiver, _ = listener.accept()
        with receiver:
            kstamp.enable(receiver)
            # When no socket of the machine wanted stamps, Linux turns them on
            # from a work queue, a moment after the first asks: the first bytes
            # may come unstamped (a CI run saw it). A bounded poll until they do.
            deadline = time.monotonic() + 2.0
            while not _stamping(sender, receiver):
                assert time.monotonic() < deadline, "the kernel never stamped a read"
                time.sleep(0.001)
            yield sender, receiver


def test_a_loopback_tcp_read_carries_a_realtime_stamp_between_send_and_read() -> None:
    with _stamped_pair() as (sender, receiver):
        sent = time.time_ns()
        sender.sendall(b"x" * 100)
        time.sleep(0.05)
        data, ancillary, _flags, _address = receiver.recvmsg(4096, kstamp.ANCILLARY_SIZE)
        read = time.time_ns()
    assert data == b"x" * 100
    stamp = kstamp.stamp_ns(ancillary)
    # Queued after the send began and well before the read, 50 ms later.
    assert sent <= stamp <= read - 40_000_000


def test_a_read_of_two_sends_is_stamped_with_the_newer_one() -> None:
    # Why the bench counts only a read's last message as exactly stamped: the
    # older bytes of a late read carry the newer send's arrival.
    with _stamped_pair() as (sender, receiver):
        sender.sendall(b"a" * 100)
        time.sleep(0.05)  # the gap being measured, not a synchronisation
        second = time.time_ns()
        sender.sendall(b"b" * 100)
        deadline = time.monotonic() + 2.0
        while len(receiver.recv(4096, socket.MSG_PEEK)) < 200:
            assert time.monotonic() < deadline, "the second send never arrived"
            time.sleep(0.001)
        data, ancillary, _flags, _address = receiver.recvmsg(4096, kstamp.ANCILLARY_SIZE)
    assert data == b"a" * 100 + b"b" * 100
    assert kstamp.stamp_ns(ancillary) >= second
