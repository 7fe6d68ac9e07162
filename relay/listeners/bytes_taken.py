"""How many bytes the kernel has taken from the writers of a TCP connection, asked of the kernel.

What a process wrote to a socket is either acknowledged by the peer already
(``tcpi_bytes_acked`` of ``TCP_INFO``, since Linux 4.1) or still in the send
queue (``SIOCOUTQ``: sent but not acknowledged, or not sent yet). Their sum
grows by exactly what is written, and by nothing else: two readings tell how
many bytes were written in between, whoever wrote them (a transport this
process stopped, whose last writes are not known otherwise).
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios

#: ``tcpi_bytes_acked`` in Linux's ``struct tcp_info`` (a ``__u64`` at byte 120).
_BYTES_ACKED = struct.Struct("=Q")
_BYTES_ACKED_AT = 120
#: Room for the whole structure as today's kernels fill it (an older one fills less).
_TCP_INFO_BYTES = 256
#: ``SIOCOUTQ`` is ``TIOCOUTQ`` on Linux.
_QUEUED = struct.Struct("=i")
#: Readings tried before giving up while acknowledgements keep coming between the two questions.
_ATTEMPTS = 20


def bytes_taken(fd: int) -> int | None:
    """The bytes written to the TCP connection ``fd`` so far, plus a constant of its own.

    Only the difference of two readings means anything. None where it cannot
    be told: not a TCP socket, a kernel without the count, or an
    acknowledgement arriving between the two questions at every attempt.
    The count is asked again after the queue: the same count twice means no
    acknowledgement moved bytes from the queue to the count in between.
    """
    try:
        with socket.socket(fileno=fd) as sock:
            try:
                return _reading(sock)
            finally:
                sock.detach()  # the caller's descriptor: only borrowed here
    except OSError:
        return None


def _reading(sock: socket.socket) -> int | None:
    for _ in range(_ATTEMPTS):
        acked = _acked(sock)
        (queued,) = _QUEUED.unpack(fcntl.ioctl(sock, termios.TIOCOUTQ, bytes(_QUEUED.size)))
        if acked is None:
            return None
        if _acked(sock) == acked:
            return acked + int(queued)
    return None


def _acked(sock: socket.socket) -> int | None:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
    if len(info) < _BYTES_ACKED_AT + _BYTES_ACKED.size:
        return None
    (acked,) = _BYTES_ACKED.unpack_from(info, _BYTES_ACKED_AT)
    return int(acked)
