"""Telling systemd about relay's lifecycle: sd_notify without libsystemd.

With ``Type=notify`` systemd waits for ``READY=1`` before it considers relay
started, and kills it if a configured watchdog is not pinged in time. The
protocol is one datagram per message to the socket named by ``$NOTIFY_SOCKET``
(a leading ``@`` means Linux's abstract namespace). Outside systemd the
variable is unset and every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("relay.systemd")


class Notifier:
    """Sends state changes to systemd, if relay runs under it."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        """Read ``NOTIFY_SOCKET`` and the watchdog settings from ``environ``."""
        address = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and (not pid or pid == str(os.getpid()))
        #: Seconds between watchdog pings (half of systemd's timeout), or None.
        self.watchdog_interval = int(usec) / 2_000_000 if watched else None

    def notify(self, *assignments: str) -> None:
        """Send ``READY=1``, ``STOPPING=1``, ``STATUS=...`` and the like."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(assignments).encode(), self._address)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self._address.lstrip("\0"), exc)

    def ready(self, status: str, *, main_pid: int | None = None) -> None:
        """The node serves: listeners are bound.

        ``main_pid``: this process took over from the service's main process
        (an upgrade), and is its main process from now on.
        """
        if main_pid is None:
            self.notify("READY=1", f"STATUS={status}")
        else:
            self.notify(f"MAINPID={main_pid}", "READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        """A reload (or an upgrade) has begun; ``READY=1`` says it ended.

        ``MONOTONIC_USEC=`` is when, on ``CLOCK_MONOTONIC``: systemd 253 and
        later want it with ``RELOADING=1`` (``Type=notify-reload`` checks it
        against when it sent the signal).
        """
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}")

    def stopping(self) -> None:
        """Shutdown has begun."""
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        """Tell the watchdog the event loop is alive."""
        self.notify("WATCHDOG=1")
