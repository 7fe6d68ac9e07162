"""systemd's file descriptor store: hand descriptors to systemd on a stop, take them back at start.

The protocol (sd_notify(3), sd_listen_fds(3)): ``FDSTORE=1`` + ``FDNAME=``
with the descriptors as SCM_RIGHTS on the ``$NOTIFY_SOCKET`` datagram socket
stores them (systemd keeps a duplicate, and keeps it across a restart);
``FDSTOREREMOVE=1`` + ``FDNAME=`` makes it close them; ``BARRIER=1`` with the
write end of a pipe is answered by closing it once every earlier message was
processed. The next start gets them at descriptor 3 onwards, named in
``$LISTEN_FDNAMES``. The message contents are ``relay.links.fdstore_wire``.

relay uses the store only when asked: ``$NOTIFY_SOCKET`` set and ``$FDSTORE``
above 0, which systemd (254 and later) sets from the unit's
``FileDescriptorStoreMax=`` (on an older systemd, set it with ``Environment=``).
"""

from __future__ import annotations

import array
import logging
import os
import select
import socket
from collections.abc import Mapping, MutableMapping, Sequence

from relay.links.fdstore_wire import (
    FdStoreError,
    Passed,
    chunks,
    listen_fds,
    remove_message,
    store_message,
)

log = logging.getLogger("relay.systemd")

#: How long a barrier waits for systemd to have read what relay sent before it.
BARRIER_SECONDS = 5.0
#: The variables that describe passed descriptors: unset once read, so no child inherits them.
LISTEN_VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "LISTEN_FDS_START")


class FdStore:
    """This service's file descriptor store in systemd."""

    def __init__(self, address: str, capacity: int) -> None:
        """Talk to systemd at ``address`` (``$NOTIFY_SOCKET``), which keeps ``capacity`` fds."""
        self._address = "\0" + address[1:] if address.startswith("@") else address
        #: ``FileDescriptorStoreMax=``: systemd closes what is stored past it.
        self.capacity = capacity

    @classmethod
    def of(cls, environ: Mapping[str, str] = os.environ) -> FdStore | None:
        """The store when relay runs under systemd with one (``$FDSTORE`` > 0), else None."""
        address = environ.get("NOTIFY_SOCKET", "")
        capacity = environ.get("FDSTORE", "")
        if not address or not capacity.isdigit() or int(capacity) == 0:
            return None
        return cls(address, int(capacity))

    def _send(self, message: bytes, fds: Sequence[int] = ()) -> None:
        """One datagram to systemd, with ``fds`` as SCM_RIGHTS.

        Raises:
            OSError: systemd's socket is not there (or is full).
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            if fds:
                rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                sock.sendmsg([message], rights, 0, self._address)
            else:
                sock.sendto(message, self._address)

    def store(self, name: str, fds: Sequence[int], *, poll: bool = True) -> None:
        """Store ``fds`` under ``name``; systemd keeps duplicates, this process still owns them.

        Raises:
            OSError: systemd could not be told.
        """
        for group in chunks(fds):
            self._send(store_message(name, poll=poll), group)

    def remove(self, names: Sequence[str]) -> None:
        """Make systemd close what it keeps under each of ``names``; a failure is logged."""
        for name in names:
            try:
                self._send(remove_message(name))
            except OSError as exc:
                log.warning("cannot remove %s from systemd's file descriptor store: %s", name, exc)

    def barrier(self, timeout: float = BARRIER_SECONDS) -> bool:
        """Block until systemd has processed every message sent before; False if it did not say.

        Without it a process that stores its descriptors and exits at once
        could be gone before systemd reads the messages, which it then drops.
        """
        read_end, write_end = os.pipe()
        try:
            try:
                self._send(b"BARRIER=1", [write_end])
            finally:
                os.close(write_end)
            poller = select.poll()
            poller.register(read_end, select.POLLHUP)
            return bool(poller.poll(timeout * 1000))
        except OSError as exc:
            log.warning("systemd did not confirm the file descriptor store: %s", exc)
            return False
        finally:
            os.close(read_end)


def memfd_with(name: str, data: bytes) -> int:
    """A memfd holding ``data`` (read back with :func:`read_memfd`); the caller closes it."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_memfd(fd: int, limit: int) -> bytes:
    """Everything in the file ``fd`` from its start (its offset is shared: ``pread``).

    Raises:
        FdStoreError: more than ``limit`` bytes, or not a readable file.
    """
    parts: list[bytes] = []
    offset = 0
    try:
        while part := os.pread(fd, 1 << 20, offset):
            offset += len(part)
            if offset > limit:
                raise FdStoreError(f"relay-state is over {limit} bytes")
            parts.append(part)
    except OSError as exc:
        raise FdStoreError(f"relay-state cannot be read: {exc}") from None
    return b"".join(parts)


def take_passed(environ: MutableMapping[str, str] = os.environ) -> Passed:
    """The descriptors systemd passed this process, now its own (close-on-exec, variables unset).

    Malformed variables are logged and whatever they counted is closed: what
    they name cannot be trusted.
    """
    count = environ.get("LISTEN_FDS", "")
    ours = environ.get("LISTEN_PID", "") == str(os.getpid())
    try:
        named = listen_fds(environ, os.getpid())
    except FdStoreError as exc:
        log.error("systemd passed descriptors relay cannot read, starting clean: %s", exc)
        named = []
        if ours and count.isdigit():
            os.closerange(3, 3 + int(count))
    finally:
        for variable in LISTEN_VARIABLES:
            environ.pop(variable, None)
    for _, fd in named:
        os.set_inheritable(fd, False)  # not to a successor that relay starts (SIGUSR2)
    return Passed.sort(named)


def drop_passed(reason: str, environ: MutableMapping[str, str] = os.environ) -> int:
    """Close what systemd passed and make it forget it: relay does not use the store ``reason``.

    Kept, the listening sockets (bound without SO_REUSEPORT) would hold the
    ports relay binds afresh, which then fails with EADDRINUSE, and systemd
    would pass them again at every start; the browsers kept there are
    dropped (closed: they reconnect). Imports nothing heavy: a ``--workers``
    supervisor calls it. Returns how many descriptors were closed.
    """
    address = environ.get("NOTIFY_SOCKET", "")
    passed = take_passed(environ)
    fds = passed.all_fds()
    if not fds:
        return 0
    log.warning(
        "systemd passed %d descriptors from its file descriptor store, which relay does not "
        "use %s: closing them (%d browser connections kept there reconnect)",
        len(fds),
        reason,
        len(passed.browsers),
    )
    store = FdStore(address, 0) if address else None
    if store is not None:
        store.remove(sorted(passed.names))
    for fd in fds:
        os.close(fd)
    if store is not None:
        # systemd closes its duplicates when it reads the removal, and until then the
        # listening sockets among them hold their ports: a bind right after failed with
        # EADDRINUSE whenever systemd was slower than this process (seen under load).
        store.barrier()
    return len(fds)
