"""When a quiet subscription to Redis is pinged, and when its silence means it is dead.

A subscription only listens. A connection that died without a word (a cut
link, a host that vanished or rebooted, a NAT that forgot it, a hung Redis)
looks exactly like a quiet channel: no FIN or RST arrives, and a socket that
sends nothing never times out. So each of a node's subscriptions (the
broker's messages, the cluster-status verdicts) is proven alive by a ping
whose answer comes back along it, sent whenever nothing arrived for
``ping_interval`` seconds; once nothing at all arrived for ``stale_after``
seconds, the subscription is given up and made again.

Pure: the caller reads the clock and does the I/O.
"""

from __future__ import annotations

__all__ = ["SilenceWatch", "StaleSubscriptionError"]


class StaleSubscriptionError(Exception):
    """A subscription stayed silent too long: not even its ping's answer came back."""


class SilenceWatch:
    """One subscription's last sign of life, and the ping that asks for the next."""

    def __init__(self, ping_interval: float, stale_after: float, now: float) -> None:
        """Watch a subscription confirmed at ``now``; ping it every ``ping_interval`` when quiet."""
        self._ping_interval = ping_interval
        self._stale_after = stale_after
        self._heard_at = self._pinged_at = now

    def heard(self, now: float) -> None:
        """Anything arrived on the subscription (a message, a ping's answer)."""
        self._heard_at = now

    def silent_for(self, now: float) -> float | None:
        """Seconds without a word when that is too long (the subscription is dead), else None."""
        silent = now - self._heard_at
        return silent if silent >= self._stale_after else None

    def ping_due(self, now: float) -> bool:
        """Whether to ping the quiet subscription now; a True counts as the ping sent."""
        if now - self._pinged_at < self._ping_interval:
            return False
        self._pinged_at = now
        return True
