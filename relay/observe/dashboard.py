"""The live status page, told where the node's client port is and which keys to follow.

The page (``GET /dashboard/`` on the admin port) is one self-contained HTML
file with no external assets. It opens a WebSocket to the node's client port
and subscribes, with the ordinary ``subscribe`` command, to the node-status
key and the cluster-status keys; the node announces its own status on that
key every few seconds, and the cluster-status module announces database and
repository changes as they happen (``node_status`` builds the node's
messages). No reload, no polling of HTTP endpoints. The charts of the last
minutes start from the node's time series, embedded in the page, and grow by
the sample each node-status message carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any

import orjson

from relay.config import DashboardConfig
from relay.config.hosts import url_host

_PAGE = resources.files("relay.observe").joinpath("static/dashboard.html")


def render_page(
    host: str,
    *,
    client_port: int,
    tls: bool,
    dashboard: DashboardConfig,
    status_keys: Mapping[str, str],
    series: Mapping[str, list[Any]],
) -> bytes:
    """The page, told where the node's client port is and which keys to follow.

    ``host`` is the host name the operator used to reach the admin port; the
    client port (``client_port``, with TLS when ``tls``) is on the same node.
    ``series`` is the node's recent samples (``TimeSeries.columns``), so the
    charts show the last minutes the moment the page opens.
    """
    scheme = "wss" if tls else "ws"
    settings = {
        "url": f"{scheme}://{url_host(host)}:{client_port}/~{dashboard.instance}/",
        "nodeKey": dashboard.key,
        "statusKeys": dict(status_keys),
        "chartSeconds": dashboard.chart_seconds,
        "series": series,
    }
    # </script> cannot occur in JSON produced from these values, but escape "<" anyway.
    blob = orjson.dumps(settings).decode().replace("<", "\\u003c")
    return _PAGE.read_bytes().replace(b"/*SETTINGS*/null", blob.encode())
