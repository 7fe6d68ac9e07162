"""What a node shows of itself, read from its typed snapshot (``relay.core.snapshot``).

- ``metrics``: the Prometheus collector over relay's own counters;
- ``dashboard`` and ``static/dashboard.html``: the live status page;
- ``node_status``: the node-status message that feeds the page;
- ``timeseries``: the last minutes for the page's charts, a bounded ring.

Nothing here holds the node: each reader is handed snapshots.
"""
