"""A worker's answers for its whole node: ``/status/``, ``/metrics`` and the status page.

Each reads the node's view, this worker's reading and its siblings' added up
(``relay.workers.siblings``), and renders it as a single process renders its
own snapshot.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from relay.core.latency_slots import LatencySlot
from relay.core.snapshot import NodeSnapshot
from relay.observe.worker_metrics import node_exposition
from relay.workers.siblings import Siblings


def status_of(siblings: Siblings) -> Callable[[str], Awaitable[dict[str, Any]]]:
    """``/status/`` of the node for an instance, with the ``workers`` list."""

    async def status(instance: str) -> dict[str, Any]:
        return (await siblings.view()).status(instance)

    return status


def metrics_of(siblings: Siblings) -> Callable[[], Awaitable[bytes]]:
    """``/metrics`` of the node, with the workers' own families."""

    async def metrics() -> bytes:
        return node_exposition(await siblings.view())

    return metrics


async def node_snapshot(
    siblings: Siblings | None, own: Callable[[], NodeSnapshot]
) -> tuple[NodeSnapshot, Mapping[str, tuple[LatencySlot, ...]]]:
    """The snapshot the status page shows, and the other workers' recent latencies to chart.

    For a single process: ``own()``, and no other latencies.
    """
    if siblings is None:
        return own(), {}
    view = await siblings.view()
    return view.snapshot, view.sibling_latencies
