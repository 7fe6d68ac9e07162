"""A restart in broker mode: where the stopping process stood in Redis, and going on from there.

A restart (``relay.node.restart``) has no channel to forward messages down,
as a handoff has: between the stop and the next start, only systemd's store
holds anything. So the stopping process stops reading Redis *before* it
cuts its browsers (:func:`stop_reading`): from then on nothing more reaches
them, and where it stood (the handoff's ``Position``: newest stream id per
instance, Redis' time at its last reload) goes into ``relay-state`` with
them. The next process holds its broker back and reads from exactly that
position (:func:`resume_at`, the handoff's ``Resumption``): what Redis took
meanwhile (posts to other nodes, posts waiting in this node's admin backlog)
reaches the kept browsers once, in Redis' order. The cluster-status verdicts
announced to them (:func:`heard`) are stored too, and not announced again.
"""

from __future__ import annotations

import asyncio
import logging
import time

from relay.broker.link import BrokerState
from relay.links.fdstore_wire import StoredState
from relay.links.handoff_wire import Position
from relay.links.lease_wire import SharedVerdict
from relay.node.handoff_cut import Resumption
from relay.node.node import Node

log = logging.getLogger("relay.restart")

#: Pause between looks at the posts still on their way back from Redis (a bounded poll:
#: the hub has no event for "nothing held").
HELD_POLL = 0.02


async def stop_reading(node: Node) -> Position | None:
    """Stop ``node``'s broker link once its own posts are back; return where it stands.

    None in mesh mode. Call once the admin listeners are closed (no post
    comes any more): a post answered is placed in Redis but may not be back
    yet, and released here it would be delivered here *and*, following the
    position, by the next process. So the posts held are awaited first, at
    most the broker's command timeout; those still held then (Redis slow)
    are delivered here, logged, and may reach a browser twice.
    """
    broker = node.broker
    if broker is None:
        return None
    timeout = broker.config.timeout_seconds
    deadline = time.monotonic() + timeout
    while True:
        if not node.hub.held or broker.state is not BrokerState.UP:
            break
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(HELD_POLL)
    if held := node.hub.held:
        log.warning(
            "%d posts did not come back from Redis before the restart: delivered here, "
            "the next process may deliver them again",
            held,
        )
    await broker.stop(timeout)  # what is queued gets the same grace as at any stop
    return broker.inbound.position()


def resume_at(node: Node, state: StoredState | None) -> Resumption | None:
    """Hold ``node``'s broker back until the browsers are adopted (call before ``node.start``).

    None in mesh mode. Without a position (a state stored in mesh mode, or
    none usable) the broker then starts as at any start, its first reload
    only filling history.
    """
    if node.broker is None:
        return None
    if state is None:
        return Resumption(node, None)
    return Resumption(node, state.position, state.verdicts)


def heard(node: Node) -> list[SharedVerdict]:
    """The cluster-status verdicts announced to ``node``'s browsers (broker mode), to store."""
    checks = node.status_monitor
    if node.broker is None or checks is None:
        return []
    return checks.heard()
