"""Cluster status: live database health and repository sync for browsers.

The side module that watches a Phorge cluster the way Phorge's "Database
Servers" and "Repository Servers" consoles do, and publishes each change as
an ordinary relay message on well-known keys. (The name keeps it apart from
the admin port's ``/status/`` and from the peer ``cluster``; the config
section is still ``cluster_status``.) Layout, pure core first:

- ``connection``, ``replication``, ``health``, ``databases``: verdicts for
  one database check, the 5-in-a-row health record, the cluster mode;
- ``repositories``: repository sync from Phorge's table rows;
- ``events``: payloads, change detection, message wrapping;
- ``driver`` and ``monitor``: the asyncio edge (aiomysql, background tasks).

Its config section is ``relay.config.cluster_status`` and its CLI table
``relay.cli.cluster_table``. Nothing is imported here, so that a pure verdict
module loads without the MySQL driver: import the module you need
(``relay.cluster_status.monitor`` for the monitor).
"""
