"""Cluster status: live database health and repository sync for browsers.

The side module that watches a Phorge cluster the way Phorge's "Database
Servers" and "Repository Servers" consoles do, and publishes each change as
an ordinary relay message on well-known keys. Layout, pure core first:

- ``config``: the ``cluster_status`` config section (frozen models);
- ``connection``, ``replication``, ``health``, ``databases``: verdicts for
  one database check, the 5-in-a-row health record, the cluster mode;
- ``repositories``: repository sync from Phorge's table rows;
- ``events``: payloads, change detection, message wrapping;
- ``table``: the text table of ``relay cluster-status``;
- ``driver`` and ``monitor``: the asyncio edge (aiomysql, background tasks).
"""

from __future__ import annotations

from .config import ClusterStatusConfig, format_validation_error, load_cluster_status
from .monitor import ClusterStatusMonitor
from .table import render_table

__all__ = [
    "ClusterStatusConfig",
    "ClusterStatusMonitor",
    "format_validation_error",
    "load_cluster_status",
    "render_table",
]
