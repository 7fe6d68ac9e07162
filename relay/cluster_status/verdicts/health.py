"""Per-host health: the last five check results decide healthy or unhealthy.

Pure. Like Phorge's health record: a host starts healthy; when all of the
last five checks failed it becomes unhealthy, when all five succeeded it is
healthy again, and a mixed window leaves the state as it was. Each observer
keeps its own record, so two relay nodes may disagree, as two Phorge web
servers may.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["HEALTH_WINDOW", "HealthChange", "HealthTracker"]

#: How many results in a row it takes to change state (Phorge uses 5).
HEALTH_WINDOW = 5


@dataclass(frozen=True)
class HealthChange:
    """A transition, reported by ``HealthTracker.record`` when it happens."""

    healthy: bool
    at: float


class HealthTracker:
    """The sliding window of recent check results for one host.

    Time is given by the caller with every result (``at``, any clock the
    caller likes, usually wall-clock seconds), so tests never wait.
    """

    def __init__(self, window: int = HEALTH_WINDOW, *, healthy: bool = True) -> None:
        """Start ``healthy``, with an empty window of ``window`` results.

        A node taking the checks over starts each host from the health the
        previous checker published, so it does not announce a false recovery.
        """
        if window < 1:
            raise ValueError("window must be at least 1")
        self._window = window
        self._results: deque[bool] = deque(maxlen=window)
        self._healthy = healthy
        self._changed_at: float | None = None

    @property
    def healthy(self) -> bool:
        """The current state."""
        return self._healthy

    @property
    def up(self) -> int:
        """How many of the recent checks succeeded."""
        return sum(self._results)

    @property
    def down(self) -> int:
        """How many of the recent checks failed."""
        return len(self._results) - self.up

    @property
    def changed_at(self) -> float | None:
        """When the state last changed (None: never, still the initial state)."""
        return self._changed_at

    def record(self, success: bool, at: float) -> HealthChange | None:
        """Add one result; return the transition it caused, or None.

        Takes whether the check succeeded and when it ran.
        """
        self._results.append(success)
        if len(self._results) < self._window:
            return None
        if all(self._results):
            new_state = True
        elif not any(self._results):
            new_state = False
        else:
            return None
        if new_state == self._healthy:
            return None
        self._healthy = new_state
        self._changed_at = at
        return HealthChange(new_state, at)
