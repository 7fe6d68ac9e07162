"""Which presence a node keeps: in Redis (broker mode), over its peer links (a mesh), or none.

Broker mode announces in Redis (``relay.broker.presence``); a mesh (peers
in ``cluster``, no broker) announces to the peers (``relay.peering.presence``).
A worker of a ``--workers`` mesh node keeps none: its peers' announcements
reach whichever worker accepts them, so no worker would hear every peer.
"""

from __future__ import annotations

from collections.abc import Callable

from relay.broker.presence import Presence, presence_for
from relay.config import Config
from relay.core.snapshot import NodeSnapshot
from relay.peering.peers import PeerSet
from relay.peering.presence import MeshPresence
from relay.workers.plan import WorkerRole

__all__ = ["AnyPresence", "new_presence"]

AnyPresence = Presence | MeshPresence


def new_presence(
    config: Config,
    peers: PeerSet,
    fingerprint: str,
    *,
    snapshot: Callable[[], NodeSnapshot],
    role: WorkerRole | None,
    address: Callable[[], str],
) -> AnyPresence | None:
    """The presence the node ``fingerprint`` keeps under ``config``; None without one."""
    worker = None if role is None else role.index
    if config.broker is not None:
        return presence_for(config.broker, fingerprint, snapshot, worker, address)
    if not config.cluster or role is not None:
        return None
    return MeshPresence(
        peers,
        config.peering.presence_interval_seconds,
        fingerprint,
        snapshot=snapshot,
        address=address,
    )
