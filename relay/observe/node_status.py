"""The node's status as a message on the dashboard key, for the live status page.

The node announces one every few seconds (``dashboard.interval_seconds``)
with the time-series sample it has just taken: the page shows its figures
and rates, and appends the sample to its charts.
"""

from __future__ import annotations

from typing import Any

from relay.core.envelope import new_message
from relay.core.snapshot import NodeSnapshot
from relay.observe.timeseries import Sample, sample_fields


def status_message(snapshot: NodeSnapshot, key: str, sample: Sample) -> dict[str, Any]:
    """The status in ``snapshot`` as an ordinary relay message on the dashboard ``key``.

    ``sample`` is the time-series sample just taken from ``snapshot``; its
    rates are the page's message rates.
    """
    readings = snapshot.instances.values()
    data = {
        "fingerprint": snapshot.fingerprint,
        "uptime_ms": snapshot.uptime_ms,
        "connections": snapshot.connections,
        "subscriptions": snapshot.subscriptions,
        "messages_in": sum(r.messages_in for r in readings),
        "messages_out": sum(r.messages_out for r in readings),
        "rate_in": round(sample.rate_in, 1),
        "rate_out": round(sample.rate_out, 1),
        "peers": [peer.status() for peer in snapshot.peers],
        # Broker mode only: the page shows the link to Redis when this is set.
        "broker": None if snapshot.broker is None else snapshot.broker.status(),
        # Broker mode or a mesh: every node of the cluster, for the page's Cluster table.
        "nodes": None if snapshot.nodes is None else dict(snapshot.nodes),
        # The running code, its start and the browsers it adopted in a handoff.
        "process": None if snapshot.process is None else snapshot.process.status(),
        "sample": sample_fields(sample),
    }
    return new_message(key, "relay.node", data)
