"""The parts a node routes with, built once from its configuration.

The hub, its history and remembered identities, the peer links, the link to
Redis (broker mode), the connection caps, the overload guard, the status
page's time series and the listeners' TLS contexts. ``Node`` starts and stops
them; ``relay.node.reload`` hands them new settings in place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from relay.broker.link import Broker
from relay.config import Config, DashboardConfig, HistoryConfig, PeeringConfig
from relay.config.cluster_status import ClusterStatusConfig
from relay.config.secrets import Secret
from relay.config.tls import ListenerContexts
from relay.core.admission import Admission
from relay.core.dedup import RecentIds
from relay.core.fingerprint import new_fingerprint
from relay.core.history import History
from relay.core.hub import Hub
from relay.links.backoff import Backoff
from relay.links.forwarding import forward_for
from relay.links.overload import OverloadGuard
from relay.node.cluster_checks import ClusterChecks
from relay.observe.timeseries import TimeSeries, capacity_for
from relay.peering.peers import PeerSet

#: Upper bound on remembered message identities (about 100 bytes each).
RECENT_IDS_CAPACITY = 200_000


@dataclass(frozen=True, slots=True)
class Parts:
    """What one node routes with; each part is built once and reconfigured in place."""

    hub: Hub
    history: History
    recent: RecentIds
    peers: PeerSet
    #: The link to Redis; None unless the node runs in broker mode.
    broker: Broker | None
    admission: Admission
    overload: OverloadGuard
    #: The last minutes, for the status page's charts.
    series: TimeSeries
    #: The listeners' TLS contexts, which a reload renews.
    tls: ListenerContexts

    @classmethod
    def build(cls, config: Config, secret: Secret | None, clock: Callable[[], float]) -> Parts:
        """Every part for ``config``, under a new fingerprint; nothing is started."""
        fingerprint = new_fingerprint()
        history = History(
            config.history.max_messages,
            config.history.max_age_seconds,
            clock,
            config.history.max_bytes,
        )
        # Remember identities at least as long as history keeps messages and peer
        # queues hold them, so a late copy never gets delivered next to the original.
        recent = RecentIds(dedup_window(config.history, config.peering), RECENT_IDS_CAPACITY, clock)
        peers = PeerSet(config.cluster, config.peering, fingerprint, secret=secret, clock=clock)
        broker = None
        if config.broker is not None:
            broker = Broker(
                config.broker,
                fingerprint,
                backoff=Backoff(
                    config.broker.backoff_initial_seconds, config.broker.backoff_max_seconds
                ),
                history=config.history,
                limits=config.limits,
                clock=clock,
            )
        hub = Hub(
            fingerprint=fingerprint,
            history=history,
            recent=recent,
            clock=clock,
            limits=config.limits,
            forward=forward_for(peers.forward, None if broker is None else broker.publish),
            brokered=broker is not None,
        )
        limits = config.limits
        return cls(
            hub=hub,
            history=history,
            recent=recent,
            peers=peers,
            broker=broker,
            admission=Admission(limits.max_connections, limits.max_connections_per_ip),
            overload=OverloadGuard(config.peering.when_full),
            series=TimeSeries(
                clock, chart_capacity(config.dashboard), config.dashboard.interval_seconds
            ),
            tls=ListenerContexts(),
        )


def new_monitor(
    status: ClusterStatusConfig | None, hub: Hub, broker: Broker | None = None
) -> ClusterChecks | None:
    """The cluster-status module for ``status`` (None when the section is absent).

    With a ``broker`` (the node's link to Redis, whose config it shares) one
    node per cluster checks; without, this node checks for itself.
    """
    if status is None:
        return None
    return ClusterChecks(
        status, None if broker is None else broker.config, hub.fingerprint, hub.announce
    )


def dedup_window(history: HistoryConfig, peering: PeeringConfig) -> float:
    """How long message identities are remembered: well past the history window.

    Also past the age a peer's queue keeps a message (``queue_max_age_seconds``),
    twice over: a copy that waited in one peer's queue, or in two along a
    detour, while the first copy came straight, must still be known as a copy
    when it arrives. (Peers are assumed to share this node's peering settings.)
    """
    return max(history.max_age_seconds, peering.queue_max_age_seconds, 60.0) * 2


def chart_capacity(dashboard: DashboardConfig) -> int:
    """Samples for the status page's charts: one per announcement, over the chart window."""
    return capacity_for(dashboard.chart_seconds, dashboard.interval_seconds)
