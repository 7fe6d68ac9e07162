"""The live status page, told where the node's client port is and which keys to follow.

The page (``GET /dashboard/`` on the admin port) is one HTML file plus the
chart library it loads from the same port (uPlot, vendored under
``static/vendor/uplot/`` by ``scripts/refresh-uplot``); nothing comes from
elsewhere. It opens a WebSocket to the node's client port and subscribes,
with the ordinary ``subscribe`` command, to the node-status key and the
cluster-status keys; the node announces its own status on that key every few
seconds, and the cluster-status module announces database and repository
changes as they happen (``node_status`` builds the node's messages). No
reload, no polling of HTTP endpoints. The charts start from the node's time
series, embedded in the page, and grow by the sample each node-status message
carries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import orjson

from relay.config import DashboardConfig
from relay.config.hosts import url_host

_STATIC = resources.files("relay.observe").joinpath("static")

#: The files served beside the page (it loads the first two), with their content types.
_ASSETS = {
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
    "LICENSE": "text/plain",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """A file the page loads from the admin port, and how to serve it."""

    body: bytes
    content_type: str
    #: A digest of ``body``: the page asks for ``name?v=<digest>``, so a new
    #: release gets a new URL and the old one can be cached for good.
    digest: str


def asset(name: str) -> Asset | None:
    """The vendored file ``name`` (``uPlot.iife.min.js``, ...), or None for any other name."""
    return _read(name) if name in _ASSETS else None


@cache
def _read(name: str) -> Asset:
    """Read once from the package: the files only change with relay itself."""
    body = _STATIC.joinpath("vendor/uplot", name).read_bytes()
    return Asset(body, _ASSETS[name], hashlib.sha256(body).hexdigest()[:16])


def render_page(
    host: str,
    *,
    client_port: int,
    tls: bool,
    dashboard: DashboardConfig,
    status_keys: Mapping[str, str],
    series: Mapping[str, list[Any]],
    now: float,
    uptime_ms: int,
) -> bytes:
    """The page, told where the node's client port is and which keys to follow.

    ``host`` is the host name the operator used to reach the admin port; the
    client port (``client_port``, with TLS when ``tls``) is on the same node.
    ``series`` is the node's recent samples (``TimeSeries.columns``), so the
    charts show the last minutes the moment the page opens; ``now`` is the
    time on the samples' clock and ``uptime_ms`` the node's age, so the page
    can place them (and the node's start) on its own clock.
    """
    scheme = "wss" if tls else "ws"
    settings = {
        "url": f"{scheme}://{url_host(host)}:{client_port}/~{dashboard.instance}/",
        "nodeKey": dashboard.key,
        "statusKeys": dict(status_keys),
        "chartSeconds": dashboard.chart_seconds,
        "intervalSeconds": dashboard.interval_seconds,
        "series": series,
        "now": round(now, 3),
        "uptimeMs": uptime_ms,
    }
    # </script> cannot occur in JSON produced from these values, but escape "<" anyway.
    blob = orjson.dumps(settings).decode().replace("<", "\\u003c")
    page = _STATIC.joinpath("dashboard.html").read_bytes()
    for name in _ASSETS:
        page = page.replace(f"{name}?v=DIGEST".encode(), f"{name}?v={_read(name).digest}".encode())
    return page.replace(b"/*SETTINGS*/null", blob.encode())
