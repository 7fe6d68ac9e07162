"""Errors of the cluster-status module.

::

    RelayError (relay.errors)
    └── ClusterStatusError
        └── RepositoryReadError    Phorge's repository tables could not be read

Messages never contain a password: they are built from server error texts
and host names only, and the monitor redacts configured secrets again
before anything leaves it.
"""

from __future__ import annotations

from relay.errors import RelayError

__all__ = ["ClusterStatusError", "RepositoryReadError"]


class ClusterStatusError(RelayError):
    """Root of the errors the cluster-status module raises on purpose."""


class RepositoryReadError(ClusterStatusError):
    """Reading the repository and Almanac tables failed; the message says why."""
