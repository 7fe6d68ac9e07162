"""Kernel receive timestamps: when a browser's bytes were queued on its socket, not when read.

A load generator that reads 500 sockets on a busy core reads the last of them
late; the time it reads a frame then measures its own backlog as much as the
server. With ``SO_TIMESTAMPNS`` set on a socket, Linux stamps every incoming
segment (``CLOCK_REALTIME``) as it is queued for the socket (on loopback: as
the sender's write passes through the loopback device), and ``recvmsg``
returns that stamp as ancillary data. This module holds the constants Python's
``socket`` module does not define and the pure parsing of that ancillary data;
no I/O.

For TCP, one ``recvmsg`` that reads several segments returns the stamp of the
last one read: an earlier frame in the same read is given the later stamp, so
the figure can only err late, never early.
"""

from __future__ import annotations

import socket
import struct

#: ``SO_TIMESTAMP`` / ``SO_TIMESTAMPNS`` (asm-generic, x86 and arm; the ``_OLD``
#: variants, whose ``long`` fields are 64-bit on 64-bit machines). The ancillary
#: message's type (``SCM_TIMESTAMP*``) is the option's number.
SO_TIMESTAMP = 29
SO_TIMESTAMPNS = 35

#: struct timespec / struct timeval: two native longs.
_TWO_LONGS = struct.Struct("@ll")

#: Room for one timestamp message (``CMSG_SPACE`` of a timespec), with margin.
ANCILLARY_SIZE = socket.CMSG_SPACE(_TWO_LONGS.size) * 2


def enable(sock: socket.socket) -> None:
    """Ask the kernel to stamp what ``sock`` receives, in nanoseconds.

    Raises:
        OSError: the kernel does not offer the option.
    """
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def stamp_ns(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The receive time (``CLOCK_REALTIME`` ns) in ``recvmsg``'s ancillary data; 0 if none.

    Takes the list ``socket.recvmsg`` returns. A truncated message is ignored.
    """
    for level, kind, data in ancillary:
        if level != socket.SOL_SOCKET or len(data) < _TWO_LONGS.size:
            continue
        if kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = _TWO_LONGS.unpack_from(data)
            return int(seconds * 1_000_000_000 + nanoseconds)
        if kind == SO_TIMESTAMP:
            seconds, microseconds = _TWO_LONGS.unpack_from(data)
            return int(seconds * 1_000_000_000 + microseconds * 1_000)
    return 0
