"""The cluster-status module as a node runs it: on its own, or once per cluster in broker mode.

Without a broker each node checks Phorge's databases and announces what it
sees to its own browsers, as before. With one, the node holding the
cluster-status lease (``relay.broker.status_lease``) checks; its verdicts go
through Redis to every node, which announces each to its browsers once
(by ``uniqueID``), and serves the last ones in ``/cluster-status/``. A node
taking the checks over starts from the last verdicts, so it announces
nothing new unless something changed; verdicts from an older holder (a
smaller fencing token) are ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from relay.broker.status_lease import StatusLease
from relay.cluster_status.verdicts.events import DATABASES_TYPE, REPOSITORIES_TYPE
from relay.cluster_status.verdicts.resume import resume_from
from relay.cluster_status.verdicts.shared_reading import reading_from_data
from relay.config.broker import BrokerConfig
from relay.config.cluster_status import ClusterStatusConfig
from relay.core.cluster_reading import ClusterStatusReading
from relay.links.lease import Fence
from relay.links.lease_wire import SharedVerdict

if TYPE_CHECKING:
    from relay.cluster_status.monitor import ClusterStatusMonitor

__all__ = ["ClusterChecks"]

log = logging.getLogger("relay.status")

#: ``announce(instance, message)``: hand a message to this node's browsers.
Announce = Callable[[str, dict[str, Any]], None]


class ClusterChecks:
    """Runs the cluster-status checks here, or hears them from the node that runs them."""

    def __init__(
        self,
        config: ClusterStatusConfig,
        broker: BrokerConfig | None,
        fingerprint: str,
        announce: Announce,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Check with ``config``; meet the other nodes in ``broker``'s Redis when given."""
        self._config = config
        self._announce = announce
        self._monitor: ClusterStatusMonitor | None = None
        self._last: dict[str, SharedVerdict] = {}
        self._fence = Fence()
        self._seq = 0
        self.lease: StatusLease | None = None
        if broker is None:
            self._monitor = _monitor_class()(config, self._announce_local)
        else:
            self.lease = StatusLease(
                broker,
                fingerprint,
                config.lease_seconds,
                on_verdict=self._heard,
                on_acquire=self._acquired,
                on_lose=self._lost,
                clock=clock,
            )

    @property
    def speaks_for_cluster(self) -> bool:
        """Whether this node sends the cluster's alerts (without a broker: each node)."""
        return self.lease is None or self.lease.speaks_for_cluster

    async def start(self) -> None:
        """Start checking, or competing for the checks; returns at once."""
        if self.lease is not None:
            await self.lease.start()
        elif self._monitor is not None:
            await self._monitor.start()

    async def stop(self) -> None:
        """Stop checking (in broker mode, handing the lease over)."""
        if self.lease is not None:
            await self.lease.stop()
        elif self._monitor is not None:
            await self._monitor.stop()

    def heard(self) -> list[SharedVerdict]:
        """The last verdict of each kind announced here (broker mode; passed in a handoff)."""
        return list(self._last.values())

    def already_heard(self, verdicts: list[SharedVerdict]) -> None:
        """Take ``verdicts`` as announced here: a successor's browsers got them already.

        Call before ``start``, so that the read-back of the last verdicts announces nothing.
        """
        for verdict in verdicts:
            if self._fence.admit(verdict.token):
                self._last[verdict.kind] = verdict

    def reading(self) -> ClusterStatusReading:
        """What ``/cluster-status/`` shows: the live state here, or the last verdicts heard."""
        if self.lease is None:
            assert self._monitor is not None
            return self._monitor.reading()
        monitor = self._monitor
        reading = monitor.reading() if monitor is not None else self._heard_reading()
        return replace(reading, lease=self.lease.reading())

    def _heard_reading(self) -> ClusterStatusReading:
        """The reading the last verdicts make (checked as they arrive, see ``_heard``)."""
        config = self._config
        return reading_from_data(
            _data(self._last.get(DATABASES_TYPE)),
            _data(self._last.get(REPOSITORIES_TYPE)) if config.repository.enabled else None,
            instance=config.instance,
            keys=(config.keys.databases, config.keys.repositories),
        )

    # Without a broker.

    def _announce_local(self, message: dict[str, Any]) -> None:
        # Each node reports what it observes itself: announced to local
        # browsers only, never forwarded to peers.
        self._announce(self._config.instance, message)

    # Broker mode.

    def _heard(self, verdict: SharedVerdict) -> None:
        """A verdict from Redis (or from this node's own checks): announce it once."""
        if not self._fence.admit(verdict.token):
            log.debug("cluster status: ignored a verdict of an older holder")
            return
        last = self._last.get(verdict.kind)
        if last is not None and verdict.order <= last.order:
            return  # a copy (the channel and the read-back both bring each one)
        self._last[verdict.kind] = verdict
        try:
            self._heard_reading()
        except ValueError as exc:
            log.warning("cluster status: ignored a verdict: %s", exc)
            if last is None:
                del self._last[verdict.kind]
            else:
                self._last[verdict.kind] = last
            return
        if last is not None and verdict.digest == last.digest:
            # The same state again, from a holder that started without it in
            # Redis (see ``_acquired``): kept, but browsers have it already.
            return
        self._announce(self._config.instance, verdict.message)

    async def _acquired(self, token: int, stored: dict[str, SharedVerdict]) -> None:
        # Start as if announced only from what Redis holds too. A verdict known
        # here alone (checked while Redis was away, or lost with an emptied
        # Redis) goes out again at the first check, as a fresh one; nodes that
        # have its state already keep it quietly (the same digest, ``_heard``).
        digests = {
            kind: verdict.digest
            for kind, verdict in self._last.items()
            if kind in stored and stored[kind].digest == verdict.digest
        }
        resume = resume_from(digests, _data(self._last.get(DATABASES_TYPE)))
        monitor = _monitor_class()(
            self._config, lambda message: self._checked(token, message), resume=resume
        )
        self._monitor = monitor
        await monitor.start()

    async def _lost(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            await monitor.stop()

    def _checked(self, token: int, message: dict[str, Any]) -> None:
        """A verdict of this node's checks: announce it here now, publish it for the others."""
        monitor = self._monitor
        lease = self.lease
        if monitor is None or lease is None:
            return
        digest = monitor.digest(str(message["type"])) or ""
        self._seq += 1
        verdict = SharedVerdict(token, self._seq, digest, message)
        self._heard(verdict)
        lease.publish(verdict)


def _monitor_class() -> type[ClusterStatusMonitor]:
    """``ClusterStatusMonitor``, its module loaded on first use.

    It loads aiomysql, PyMySQL and cryptography: 3.3 MiB of memory of its own
    and 5.8 MiB of library pages in every process that imports it (measured
    in a --workers 6 node's idle worker), which a node without the module,
    the usual case, never uses.
    """
    from relay.cluster_status.monitor import ClusterStatusMonitor

    return ClusterStatusMonitor


def _data(verdict: SharedVerdict | None) -> dict[str, Any] | None:
    """The ``data`` of a verdict's message, None without one."""
    data = None if verdict is None else verdict.message.get("data")
    return data if isinstance(data, dict) else None
