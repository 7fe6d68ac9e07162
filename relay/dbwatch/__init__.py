"""Cluster status: live database health and repository sync for browsers.

The side module that watches a Phorge cluster the way Phorge's "Database
Servers" and "Repository Servers" consoles do, and publishes each change as
an ordinary relay message on well-known keys. (The name keeps it apart from
the admin port's ``/status/`` and from the peer ``cluster``; the config
section is still ``cluster_status``.) Layout, pure core first:

- ``config``: the ``cluster_status`` config section (frozen models);
- ``connection``, ``replication``, ``health``, ``databases``: verdicts for
  one database check, the 5-in-a-row health record, the cluster mode;
- ``repositories``: repository sync from Phorge's table rows;
- ``events``: payloads, change detection, message wrapping;
- ``table``: the text table of ``relay cluster-status``;
- ``driver`` and ``monitor``: the asyncio edge (aiomysql, background tasks).

Nothing is imported here, so that ``relay.config`` can import
``relay.dbwatch.config`` without loading the MySQL driver: import the module
you need (``relay.dbwatch.monitor`` for the monitor).
"""
