"""``/metrics`` of a ``--workers`` node: the exposition of its workers' added-up view.

The same families as a single process's (``metrics.py``), read from the
node's ``NodeView`` (``relay.core.add_up``), plus the workers' own:
how many the node runs and how many answered, their restarts, and each
answering worker's browsers.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from relay.core.worker_reading import LatencyReading, NodeView
from relay.observe.metrics import DELIVERY_LATENCY_HELP, snapshot_families


def node_exposition(view: NodeView) -> bytes:
    """The text exposition of the whole node's metrics, from ``view``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ViewCollector(view))
    return generate_latest(registry)


def latency_family(latency: LatencyReading) -> HistogramMetricFamily:
    """``relay_delivery_latency_seconds`` from a (merged) histogram reading."""
    # Python's repr writes the bounds as prometheus_client's own histogram does (0.0005, 1.0).
    les = [repr(bound) for bound in latency.bounds] + ["+Inf"]
    return HistogramMetricFamily(
        "relay_delivery_latency_seconds",
        DELIVERY_LATENCY_HELP,
        buckets=list(zip(les, latency.counts, strict=True)),
        sum_value=latency.total,
    )


def _worker_families(view: NodeView) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "relay_workers", "Worker processes the node runs.", value=len(view.workers)
    )
    yield GaugeMetricFamily(
        "relay_workers_answering",
        "Worker processes that answered for this scrape (the rest are restarting).",
        value=view.answering,
    )
    readings = [slot.reading for slot in view.workers if slot.reading is not None]
    yield CounterMetricFamily(
        "relay_worker_restarts",
        "Times the supervisor restarted a worker that had died.",
        value=sum(reading.restarts for reading in readings),
    )
    browsers = GaugeMetricFamily(
        "relay_worker_browser_connections",
        "Open browser connections of each answering worker (handshakes included).",
        labels=["worker"],
    )
    for reading in readings:
        browsers.add_metric([str(reading.index)], reading.snapshot.connections)
    yield browsers


class _ViewCollector(Collector):
    """Yields the families of one node view (a registry per scrape)."""

    def __init__(self, view: NodeView) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        yield from snapshot_families(self._view.snapshot)
        yield latency_family(self._view.latency)
        yield from _worker_families(self._view)
