"""Which presence a node keeps (in Redis, over its peer links, or none), and who sends its alerts.

Broker mode announces in Redis (``relay.broker.presence``); a mesh (peers
in ``cluster``, no broker) announces to the peers (``relay.peering.presence``).
A worker of a ``--workers`` mesh node keeps none: its peers' announcements
reach whichever worker accepts them, so no worker would hear every peer.

Alerts follow presence: in a mesh the roster says which node sends the
cluster's alerts (``relay.links.speaker``); otherwise ``speaks`` does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from relay.broker.presence import Presence, presence_for
from relay.config import Config
from relay.core.snapshot import NodeSnapshot
from relay.links.presence import GONE_AFTER
from relay.links.speaker import MeshSpeaker
from relay.observe.alerts import AlertSender
from relay.peering.peers import PeerSet
from relay.peering.presence import MeshPresence
from relay.workers.plan import WorkerRole

__all__ = ["AnyPresence", "new_alerts", "new_presence"]

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


def new_alerts(
    config: Config,
    fingerprint: str,
    *,
    snapshot: Callable[[], NodeSnapshot],
    speaks: Callable[[], bool],
    presence: AnyPresence | None,
) -> AlertSender | None:
    """The alert sender of the node ``fingerprint``, when ``config`` has alerts.

    In a mesh the oldest node of the roster sends; it waits the roster's
    settle (``GONE_AFTER`` intervals, as ``relay.links.turnover``) to have
    heard every peer before it may.
    """
    if config.alerts is None:
        return None
    mesh = None
    if isinstance(presence, MeshPresence):
        mesh = MeshSpeaker(time.monotonic, GONE_AFTER * presence.identity.interval)
    return AlertSender(config.alerts, node=fingerprint, snapshot=snapshot, speaks=speaks, mesh=mesh)
