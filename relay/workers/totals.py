"""Adding up the workers' figures into the node's: ``/status/`` and ``/metrics`` for the whole node.

Pure functions over what each worker reports of itself. Phorge reads
Aphlict's status keys, so they keep their meaning: a browser is connected
to exactly one worker and each delivery happens on one, so those are
summed; but every worker sees every message once (the posts it took itself,
the rest through the broker) and keeps the same history, so
``messages.in`` and the history figures are the largest any worker reports
(the longest-running worker's, after a restart), not a sum. The uptime is
the node's (the supervisor's).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

#: Aphlict's status keys that count things happening on one worker each.
_SUMMED_KEYS = ("clients.active", "clients.total", "messages.out")
#: Keys every worker holds a copy of: the node has the largest, not the sum.
_LARGEST_KEYS = ("messages.in", "history.size", "history.age")
#: Peer-link figures that add up over the workers' links to the same peer.
_PEER_SUMMED = ("sent", "failed", "dropped", "queue")
#: Broker-link figures: each post is published by one worker, but every worker
#: receives every message (that is how they meet), once per worker.
_BROKER_SUMMED = ("published", "queue", "dropped", "reconnects", "stale_subscriptions")
_BROKER_LARGEST = ("received",)

#: Metric families that are copies on every worker (the largest is the node's),
#: and those where any worker's 0 is the node's answer.
_LARGEST_METRICS = frozenset(
    {
        "relay_history_messages",
        "relay_instances",
        "relay_messages_in",
        "relay_broker_received",
        "relay_cluster_read_only",
        "relay_database_healthy",
        "relay_database_connection_okay",
        "relay_database_replication_delay_seconds",
        "relay_repository_service_verdict",
    }
)
_SMALLEST_METRICS = frozenset({"relay_peer_up", "relay_broker_up"})


def node_status(
    statuses: Sequence[dict[str, Any]],
    *,
    uptime_ms: int,
    workers: list[dict[str, Any]],
) -> dict[str, Any]:
    """The node's ``/status/`` from each answering worker's own (the answering worker first).

    ``workers`` describes every worker slot (answered or not); it is reported
    as the ``workers`` section.
    """
    first = statuses[0]
    status = dict(first)
    status["uptime"] = uptime_ms
    for key in _SUMMED_KEYS:
        status[key] = sum(int(part.get(key) or 0) for part in statuses)
    for key in _LARGEST_KEYS:
        values = [part[key] for part in statuses if part.get(key) is not None]
        status[key] = max(values) if values else None
    if isinstance(first.get("cluster"), list):
        status["cluster"] = _peers([part.get("cluster") or [] for part in statuses])
    if isinstance(first.get("broker"), dict):
        status["broker"] = _broker([part["broker"] for part in statuses if part.get("broker")])
    status["workers"] = workers
    return status


def _peers(lists: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each peer once: the workers' counts added up, and its worst state.

    Every worker has its own link to each peer; the node reaches the peer
    when all its links do, so a link that is not up is what the node shows.
    """
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for links in lists:
        for link in links:
            name = (str(link.get("host")), int(link.get("port") or 0))
            seen = merged.get(name)
            if seen is None:
                merged[name] = dict(link)
                continue
            for key in _PEER_SUMMED:
                seen[key] = int(seen.get(key) or 0) + int(link.get(key) or 0)
            if seen.get("state") == "up" and link.get("state") != "up":
                for key in ("state", "last_error", "last_latency_ms"):
                    seen[key] = link.get(key)
    return list(merged.values())


def _broker(links: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The node's broker link: counts added up, and the state of a link that is not up.

    The node receives the whole cluster's messages only while every worker's
    link is up, so any worker's trouble is the node's.
    """
    merged = dict(links[0])
    for key in _BROKER_SUMMED:
        merged[key] = sum(int(link.get(key) or 0) for link in links)
    for key in _BROKER_LARGEST:
        merged[key] = max(int(link.get(key) or 0) for link in links)
    for link in links:
        if link.get("state") != "up":
            for key in ("state", "since_seconds", "last_error"):
                merged[key] = link.get(key)
            break
    return merged


def node_metrics(expositions: Iterable[str], extra: Iterable[Metric] = ()) -> bytes:
    """One Prometheus exposition adding up the workers' expositions, plus ``extra`` families.

    Counters and most gauges are sums; families every worker holds a copy of
    take the largest value, ``relay_peer_up`` and ``relay_broker_up`` the
    smallest (a link is up for the node when it is up for every worker), and
    ``_created`` timestamps the earliest.
    """
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in expositions:
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                values[family.name] = {}
            samples = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in samples:
                    samples[key] = sample.value
                else:
                    samples[key] = _combine(family.name, sample.name, samples[key], sample.value)
    merged = []
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
        merged.append(family)
    merged.extend(extra)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(merged))
    return generate_latest(registry)


def _combine(family: str, sample: str, old: float, new: float) -> float:
    if sample.endswith("_created"):
        return min(old, new)
    if family in _LARGEST_METRICS:
        return max(old, new)
    if family in _SMALLEST_METRICS:
        return min(old, new)
    return old + new


class _Fixed(Collector):
    """A collector that yields families already built."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families
