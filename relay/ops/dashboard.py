"""The live status page: what it shows, and the node-status messages that feed it.

The page (``GET /dashboard/`` on the admin port) is one self-contained HTML
file with no external assets. It opens a WebSocket to the node's client port
and subscribes, with the ordinary ``subscribe`` command, to the node-status
key and the cluster-status keys; the node announces its own status on that
key every few seconds, and the cluster-status module announces database and
repository changes as they happen. No reload, no polling of HTTP endpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import orjson

from relay.config import DashboardConfig
from relay.core.envelope import new_message
from relay.snapshot import NodeSnapshot
from relay.urls import url_host

_PAGE = resources.files("relay.ops").joinpath("static/dashboard.html")


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


def render_page(
    host: str,
    *,
    client_port: int,
    tls: bool,
    dashboard: DashboardConfig,
    status_keys: Mapping[str, str],
) -> bytes:
    """The page, told where the node's client port is and which keys to follow.

    ``host`` is the host name the operator used to reach the admin port; the
    client port (``client_port``, with TLS when ``tls``) is on the same node.
    """
    scheme = "wss" if tls else "ws"
    settings = {
        "url": f"{scheme}://{url_host(host)}:{client_port}/~{dashboard.instance}/",
        "nodeKey": dashboard.key,
        "statusKeys": dict(status_keys),
    }
    # </script> cannot occur in JSON produced from these values, but escape "<" anyway.
    blob = orjson.dumps(settings).decode().replace("<", "\\u003c")
    return _PAGE.read_bytes().replace(b"/*SETTINGS*/null", blob.encode())
