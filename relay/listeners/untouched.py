"""Whether this process has read anything from a TCP connection, asked of the kernel.

A connection that has given this process no byte yet can move to another
process whole: whatever its peer sent waits in the kernel's receive queue
and goes with the descriptor. Linux counts the bytes a connection received
(``tcpi_bytes_received`` of ``TCP_INFO``, since 4.1) and says how many are
still queued (``FIONREAD``); the difference is what the process read.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios

#: ``tcpi_bytes_received`` in Linux's ``struct tcp_info`` (a ``__u64`` at byte 128).
_BYTES_RECEIVED = struct.Struct("=Q")
_BYTES_RECEIVED_AT = 128
#: Room for the whole structure as today's kernels fill it (an older one fills less).
_TCP_INFO_BYTES = 256
_QUEUED = struct.Struct("=i")


def read_nothing(fd: int) -> bool:
    """Whether no byte of the TCP connection ``fd`` has been read by anyone yet.

    False where that cannot be told: not a TCP socket, or a kernel without the
    count. The queue is asked first, so a byte arriving between the two
    questions can only turn the answer to False, never hide a read. The
    peer's FIN counts as a byte: a half-closed connection is never untouched.
    """
    try:
        (queued,) = _QUEUED.unpack(fcntl.ioctl(fd, termios.FIONREAD, bytes(_QUEUED.size)))
        with socket.socket(fileno=fd) as sock:
            try:
                info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
            finally:
                sock.detach()  # the caller's descriptor: only borrowed here
    except OSError:
        return False
    if len(info) < _BYTES_RECEIVED_AT + _BYTES_RECEIVED.size:
        return False
    (received,) = _BYTES_RECEIVED.unpack_from(info, _BYTES_RECEIVED_AT)
    return bool(received == queued)
