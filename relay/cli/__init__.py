"""The ``relay`` command: arguments, what each command does, and its client side.

- ``main``: the argument parser and the commands (``serve``, ``check-config``,
  ``status``, ``notify``, ``cluster-status``);
- ``preflight``: check-config, everything that would stop ``serve``;
- ``admin_client``: the HTTP client of ``status``, ``notify``, ``cluster-status``;
- ``status_table``, ``cluster_table``, ``columns``: the plain-text tables.
"""
