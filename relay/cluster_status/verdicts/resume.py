"""Where a node taking the checks over starts from: the state the last checker published.

Pure. In broker mode one node per cluster runs the checks; the one that takes
over after it starts from the verdicts it published (the same messages every
node's browsers got): each host's health, the cluster mode, and each kind's
fingerprint digest. Its first poll then announces nothing unless something
changed, and a host that was unhealthy stays so until five checks succeed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Resume", "resume_from"]


@dataclass(frozen=True, slots=True)
class Resume:
    """The published state a monitor starts from."""

    #: Message type -> fingerprint digest of the last message of that type.
    digests: Mapping[str, str] = field(default_factory=dict)
    #: Host label (``host:port``) -> healthy, as last published.
    healthy: Mapping[str, bool] = field(default_factory=dict)
    #: The cluster mode last published, None when none was.
    mode: str | None = None


def resume_from(digests: Mapping[str, str], databases: Mapping[str, Any] | None) -> Resume:
    """The ``Resume`` for the last digests and the ``data`` of the last database message."""
    if databases is None:
        return Resume(digests=dict(digests))
    healthy = {}
    for entry in databases.get("databases", []):
        health = entry.get("health") or {}
        if isinstance(entry.get("ref"), str) and isinstance(health.get("healthy"), bool):
            healthy[entry["ref"]] = health["healthy"]
    mode = databases.get("mode")
    return Resume(
        digests=dict(digests), healthy=healthy, mode=mode if isinstance(mode, str) else None
    )
