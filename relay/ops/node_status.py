"""The node's status as a message on the dashboard key, for the live status page.

The node announces one every few seconds (``dashboard.interval_seconds``);
the page shows its figures and the message rates worked out from the
previous one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.core.envelope import new_message
from relay.snapshot import NodeSnapshot


class NodeStatusAnnouncer:
    """Builds the node's status message, with message rates from successive calls."""

    def __init__(self, clock: Callable[[], float]) -> None:
        """``clock`` gives monotonic seconds for the rates."""
        self._clock = clock
        self._last: tuple[float, int, int] | None = None

    def message(self, snapshot: NodeSnapshot, key: str) -> dict[str, Any]:
        """The status in ``snapshot`` as an ordinary relay message on the dashboard ``key``."""
        readings = snapshot.instances.values()
        messages_in = sum(r.messages_in for r in readings)
        messages_out = sum(r.messages_out for r in readings)
        now = self._clock()
        rate_in = rate_out = 0.0
        if self._last is not None and now > self._last[0]:
            elapsed = now - self._last[0]
            rate_in = (messages_in - self._last[1]) / elapsed
            rate_out = (messages_out - self._last[2]) / elapsed
        self._last = (now, messages_in, messages_out)
        data = {
            "fingerprint": snapshot.fingerprint,
            "uptime_ms": snapshot.uptime_ms,
            "connections": snapshot.connections,
            "subscriptions": snapshot.subscriptions,
            "messages_in": messages_in,
            "messages_out": messages_out,
            "rate_in": round(rate_in, 1),
            "rate_out": round(rate_out, 1),
            "peers": [dict(peer) for peer in snapshot.peers],
        }
        return new_message(key, "relay.node", data)
