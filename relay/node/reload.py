"""What a reload (SIGHUP) changes in a running node, and what waits for a restart.

A reload keeps every connection. It takes effect at once for the limits, the
history bounds (in Redis too, in broker mode), the browser and admin
policies, the shared secret, the status page, the cluster list, the overload
policy and the cluster-status module (restarted when its section changed);
TLS certificates are read again, from the files the new config names. The
listener addresses (and TLS on or off), the pidfile, the broker and the
alerts only change with a restart: each such change is kept as it was and
named in a note.

``prepare`` loads and checks everything that can fail before anything
changes, so a refused reload leaves the node exactly as it was; ``apply``
then hands the new settings to the node's parts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from relay.broker.link import Broker
from relay.config import Config
from relay.config.secrets import Secret, load_secret
from relay.config.tls import ListenerContexts, listener_identity, peer_tls_context
from relay.core.hub import Hub
from relay.errors import StartupError
from relay.listeners.admin import AdminSettings
from relay.listeners.client_listener import ClientListener
from relay.node.cluster_checks import ClusterChecks
from relay.node.parts import Parts, chart_capacity, dedup_window, new_monitor
from relay.process.open_files import open_files_problem

#: The settings a running node keeps as they were until it restarts, and what happens meanwhile.
RESTART_ONLY = (
    ("servers", "listeners keep their old addresses until a restart"),
    ("pidfile", "it takes effect at the next start"),
    ("broker", "it takes effect at the next start"),
    # Its sender is made once, at start (README, "Alerts").
    ("alerts", "it takes effect at the next start"),
)


@dataclass(frozen=True, slots=True)
class Reload:
    """A new configuration, checked: what it needs loaded, and what it cannot change."""

    config: Config
    secret: Secret | None
    admin: AdminSettings
    #: One note for each setting that only a restart changes and that changed.
    notes: list[str]
    #: Whether the ``cluster_status`` section changed (its module is restarted).
    monitor_changed: bool


def restart_notes(old: Config, new: Config) -> list[str]:
    """A note for each setting in ``RESTART_ONLY`` that differs between ``old`` and ``new``."""
    return [
        f"{name} changed: {meanwhile}"
        for name, meanwhile in RESTART_ONLY
        if _fixed(new, name) != _fixed(old, name)
    ]


def _fixed(config: Config, name: str) -> object:
    """What of setting ``name`` waits for a restart: for listeners, all but their TLS files."""
    if name != "servers":
        return getattr(config, name)
    # A listener's TLS files are read again at a reload (ListenerContexts.renew).
    return [listener_identity(server) for server in config.servers]


def prepare(old: Config, new: Config, tls: ListenerContexts) -> Reload:
    """Load and check what ``new`` needs, changing nothing.

    Raises:
        StartupError: a secret or certificate file cannot be read, or
            ``limits.max_connections`` does not fit under the open-files limit.
    """
    secret = load_secret(new.admin)
    tls.check(new.servers)
    # Refused as at start: a cap over the open-files limit fails with EMFILE instead of 503.
    if (problem := open_files_problem(new.limits)) is not None:
        raise StartupError(problem)
    for index, peer in enumerate(new.cluster):
        peer_tls_context(f"cluster[{index}]", peer, new.peering)
    return Reload(
        config=new,
        secret=secret,
        admin=AdminSettings.of(new.limits, new.admin, secret),
        notes=restart_notes(old, new),
        monitor_changed=new.cluster_status != old.cluster_status,
    )


async def apply(change: Reload, parts: Parts, listeners: Iterable[ClientListener]) -> None:
    """Hand the new settings to every part that takes them while it runs.

    Everything up to the peer links changes at once, without a pause in between.
    """
    config = change.config
    limits = config.limits
    parts.tls.renew(config.servers)
    parts.hub.set_limits(limits)
    parts.history.resize(
        config.history.max_messages, config.history.max_age_seconds, config.history.max_bytes
    )
    if parts.broker is not None:
        parts.broker.configure(config.history, limits)
    parts.recent.set_window(dedup_window(config.history, config.peering))
    parts.series.resize(chart_capacity(config.dashboard), config.dashboard.interval_seconds)
    parts.admission.set_caps(limits.max_connections, limits.max_connections_per_ip)
    for listener in listeners:
        listener.configure(limits, config.browsers)
    await parts.peers.reconfigure(config.cluster, config.peering, change.secret)
    parts.overload.policy = config.peering.when_full


async def renew_monitor(
    change: Reload, running: ClusterChecks | None, hub: Hub, broker: Broker | None = None
) -> ClusterChecks | None:
    """The cluster-status module after a reload: ``running``, or a new one for a new section.

    ``broker`` is the node's link to Redis (broker mode): a new module meets
    the other nodes there too.
    """
    if not change.monitor_changed:
        return running
    if running is not None:
        await running.stop()
    monitor = new_monitor(change.config.cluster_status, hub, broker)
    if monitor is not None:
        await monitor.start()
    return monitor
