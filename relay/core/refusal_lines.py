"""How often a listener writes a line for the requests it refuses: at most once per interval.

A refusal is a client's mistake, or an attack: a browser over a connection
cap, a POST with the wrong secret, an address outside ``allowed_networks``.
One line each would let any client that reaches a port write to the node's
log as fast as it can send, until the disk or the journal's rate limit
(which then drops the node's other lines too) gives out. So each kind of
refusal gets one line per interval: the first at once, and the next one
after the interval says how many came since. The counts that matter to
alerts are in the metrics; the line says what happened and who did it last.

No I/O and no logging here: the caller writes the line it is told is due.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: At most one line per kind of refusal this often (seconds).
REFUSAL_LOG_INTERVAL = 10.0


class RefusalLines:
    """Per kind of refusal: how many came since its last line, and when that was."""

    def __init__(
        self,
        interval: float = REFUSAL_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """One line per kind at most every ``interval`` seconds of ``clock``."""
        self.interval = interval
        self._clock = clock
        self._logged_at: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def due(self, kind: str) -> int:
        """Count one refusal of ``kind``: how many its line reports now (this one too), or 0.

        0 means stay quiet: a line of this kind was written less than an
        interval ago. The kinds are a listener's few fixed reasons, never a
        client's address, so this holds a handful of entries.
        """
        count = self._unlogged.get(kind, 0) + 1
        now = self._clock()
        last = self._logged_at.get(kind)
        if last is not None and now - last < self.interval:
            self._unlogged[kind] = count
            return 0
        self._logged_at[kind] = now
        self._unlogged[kind] = 0
        return count
