"""Admission of browser connections: a cap per node and, optionally, per client address."""

from __future__ import annotations

from collections import Counter

#: Connections over a cap that may wait at once for their request, to be answered
#: 503 (each holds a descriptor meanwhile, up to ``limits.handshake_seconds``);
#: further ones are closed unanswered. A quarter of the descriptors relay keeps
#: for all but browsers (``relay.process.open_files.RESERVED``), so that a client
#: connecting without a pause cannot take the admin port's.
MAX_WAITING_REFUSALS = 64


class Admission:
    """Counts open connections and says whether one more may open."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        """Allow ``max_total`` connections, ``max_per_address`` per address (0: no cap)."""
        self._max_total = max_total
        self._max_per_address = max_per_address
        self._by_address: Counter[str] = Counter()
        self.total = 0
        #: Refused connections waiting for their request (``hold_refusal``).
        self.waiting_refusals = 0

    def set_caps(self, max_total: int, max_per_address: int) -> None:
        """Apply new caps (a config reload); connections over them are not closed."""
        self._max_total = max_total
        self._max_per_address = max_per_address

    def admit(self, address: str) -> str | None:
        """Take a slot for ``address``; return None if admitted, else why not."""
        if self.total >= self._max_total:
            reason = "the node is at its connection limit"
        elif self._max_per_address and self._by_address[address] >= self._max_per_address:
            reason = "this address is at its connection limit"
        else:
            self.total += 1
            self._by_address[address] += 1
            return None
        return reason

    def release(self, address: str) -> None:
        """Give back the slot taken by an admitted connection from ``address``."""
        self.total -= 1
        remaining = self._by_address[address] - 1
        if remaining:
            self._by_address[address] = remaining
        else:
            del self._by_address[address]

    def hold_refusal(self) -> bool:
        """Let a refused connection wait for its request, to answer it; False: close it now.

        True at most ``MAX_WAITING_REFUSALS`` times until ``drop_refusal`` gives one back.
        """
        if self.waiting_refusals >= MAX_WAITING_REFUSALS:
            return False
        self.waiting_refusals += 1
        return True

    def drop_refusal(self) -> None:
        """Give back a slot taken by ``hold_refusal`` (the refused connection closed)."""
        self.waiting_refusals -= 1
