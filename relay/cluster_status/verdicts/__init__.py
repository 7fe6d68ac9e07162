"""The cluster-status module's verdicts: what the rows and readings mean, no I/O.

- ``connection``, ``replication``, ``health``, ``databases``: one database
  check's verdict, the 5-in-a-row health record, the cluster's mode;
- ``repositories``: repository sync from Phorge's table rows
  (``repository_rows``), reading the JSON Phorge stores as PHP does
  (``php_values``);
- ``events``: payloads, change detection, message wrapping.
"""
