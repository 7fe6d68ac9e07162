"""Coalescing writes to browsers: what waits in the same loop turn goes out in one write.

A ``send`` costs about the same for one 200-byte frame as for several: the
system call and the TCP segment dominate. So a browser's frames are queued on
its connection, the connection is marked here, and one flush writes every
marked connection's queue in a single ``write`` each:

- **At once, by default.** The flush runs on the next turn of the event loop,
  so it writes what arrived in the same turn together (a burst of posts read
  at once, a replay) and delays nothing else. It writes a slice of the
  connections per turn, ``FIRST_SLICE`` at first and twice as many each turn
  up to ``SLICE``: between slices the loop reads what arrived meanwhile, so
  the rest of a burst (whose posts are read a turn or two after the first)
  joins the queues not yet written instead of costing every browser a second
  write; and a fan-out to many thousands does not keep the loop from
  answering anything else until it is over.
- **Held, only when the loop is busy.** The coalescer measures its own load:
  the share of recent time the loop spent writing (CPU time of its flushes
  per unit of time, an exponentially decaying average with time constant
  ``LOAD_SECONDS``). CPU time, not elapsed time: on a machine shared with
  other work, a flush that waited for the CPU says nothing of how much
  writing the node has to do, and opening the window then would only delay
  bursts on a node that has time to spare. Past ``LOAD_LOW``,
  a connection written to less than a *window* ago waits until the window
  since its last write is over; the window grows with the load up to
  ``max_window`` at ``LOAD_HIGH``. That is when writes are what the loop runs
  short of, and several messages a write save most; below it every message
  goes out at once.

The decision (when a marked connection is due, how wide the window is) lives
here with no event loop: time comes from ``clock`` and ``cpu_clock``, and the
I/O edge passes ``call_soon`` and ``call_later``.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("relay.coalescer")

#: Default widest window: the most latency coalescing adds when the loop is busiest.
#: At 100 messages/s to the same browsers it makes about 3 messages a write.
DEFAULT_MAX_WINDOW = 0.030
#: Connections written in the first loop turn of a flush, and at most in any turn.
FIRST_SLICE = 16
SLICE = 128
#: Time constant of the load average (seconds): how long a change of load takes to show.
LOAD_SECONDS = 1.0
#: Below this load every message goes out at once; at ``LOAD_HIGH`` the window is widest.
LOAD_LOW = 0.05
LOAD_HIGH = 0.20


class Queued(Protocol):
    """A connection with frames waiting in its own queue."""

    def write_queued(self, now: float) -> None:
        """Write the frames queued since the last write, in one write, at ``now``."""


def window_for(load: float, max_window: float) -> float:
    """The window (seconds) for a loop that spends ``load`` (0 to 1) of its time writing."""
    if load <= LOAD_LOW:
        return 0.0
    return max_window * min(1.0, (load - LOAD_LOW) / (LOAD_HIGH - LOAD_LOW))


class Coalescer:
    """The connections with frames waiting, and the flushes that write them."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        call_soon: Callable[[Callable[[], None]], object],
        call_later: Callable[[float, Callable[[], None]], object],
        max_window: float = DEFAULT_MAX_WINDOW,
        cpu_clock: Callable[[], float] | None = None,
    ) -> None:
        """Flush through ``call_soon(callback)`` and ``call_later(delay, callback)``.

        ``clock`` gives monotonic seconds; ``cpu_clock`` the CPU time of the
        loop's thread (``time.thread_time``), which the load is measured in
        (default: ``clock``).
        """
        self.clock = clock
        self._cpu_clock = cpu_clock or clock
        self.max_window = max_window
        #: The current window (seconds): 0 while the loop has time to spare.
        self.window = 0.0
        self._call_soon = call_soon
        self._call_later = call_later
        self._due: deque[Queued] = deque()
        self._held: list[Queued] = []
        self._soon = False
        self._timer = False
        self._slice = FIRST_SLICE
        # The load average as of ``_load_at``; it decays from there while nothing is written.
        self._load = 0.0
        self._load_at = clock()

    @property
    def load(self) -> float:
        """The share of recent time spent writing, 0 to 1 (decayed to now)."""
        return self._load * math.exp((self._load_at - self.clock()) / LOAD_SECONDS)

    def mark(self, connection: Queued, last_write: float) -> None:
        """``connection`` queued its first frame since it wrote at ``last_write``."""
        if not (self._due or self._held):
            # The first mark of a batch: the load may have decayed since the last one.
            self.window = window_for(self.load, self.max_window)
        window = self.window
        if window:
            due_in = last_write + window - self.clock()
            if due_in > 0:
                self._held.append(connection)
                if not self._timer:
                    self._timer = True
                    self._call_later(due_in, self._release)
                return
        self._due.append(connection)
        if not self._soon:
            self._soon = True
            self._call_soon(self.flush)

    def flush(self) -> None:
        """Write a slice of the due connections; the rest go on the next turn."""
        self._soon = False
        due = self._due
        now = self.clock()
        cpu_started = self._cpu_clock()
        for _ in range(min(self._slice, len(due))):
            connection = due.popleft()
            try:
                connection.write_queued(now)
            except Exception:
                # One broken connection must not cost the others their messages.
                log.exception("writing to a browser failed")
        if due:
            self._slice = min(2 * self._slice, SLICE)
            if not self._soon:
                self._soon = True
                self._call_soon(self.flush)
        else:
            self._slice = FIRST_SLICE
        self._count_busy(self._cpu_clock() - cpu_started, self.clock())

    def _release(self) -> None:
        """The earliest held connection's window is over: every held one is due now."""
        self._timer = False
        held, self._held = self._held, []
        self._due.extend(held)
        self.flush()

    def _count_busy(self, busy: float, now: float) -> None:
        """Add ``busy`` seconds spent writing, up to ``now``, to the load average."""
        decay = math.exp((self._load_at - now) / LOAD_SECONDS)
        self._load = self._load * decay + busy / LOAD_SECONDS
        self._load_at = now
        if self._due or self._held:
            self.window = window_for(self._load, self.max_window)
