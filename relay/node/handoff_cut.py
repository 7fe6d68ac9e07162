"""The cut of a handoff: what the old process routes, forwarded; where the successor goes on.

From ``LISTENERS`` to ``DONE`` the old process forwards every message it
routes (:func:`forward_routed`) in the channel's one ordered stream, with the
connection batches: a connection gets each message from exactly one process.
What "routes" means depends on the mode:

- mesh: what the hub hands its peers (``hub.forward``): every post taken here
  and every message from a peer, once (the hub has dropped duplicates);
- broker: what the hub delivers (``hub.routed``): each message from Redis
  it has not seen, and each post taken here when it is delivered, which is
  when Redis returns it in its place (or when the hub stops waiting for
  that: Redis slow or away), never twice.

In broker mode the successor (:class:`Resumption`) also reads the streams from
exactly where the old process stopped: its broker is held back
(``Broker.hold_reading``) until the position ``DONE`` carries (or, if the old
process goes away first, the one ``LISTENERS`` carried: what was forwarded
since is known to the successor's hub, which drops it if Redis brings it
again). Its first reload then delivers what follows the position and only
keeps what precedes it: nothing twice, nothing skipped, whatever Redis
received meanwhile. The posts the successor takes before that (it accepts from
``ADMIN`` on) are queued for Redis, held in the hub for the broker's order and
answered once Redis placed them (``Broker.placed``), so they reach browsers,
here and on every other node or worker, after everything posted before them
and before anything posted after their answer.

In broker mode a handoff begins only while Redis is up here
(:func:`cannot_cut`): without it posts are delivered where they are taken,
and there is no position to cut at. If Redis goes away during a handoff,
the posts the old process delivers meanwhile are forwarded like the rest.

The cluster-status verdicts the old process announced come with
``LISTENERS``: the successor takes them as heard, so its first read-back of
the last verdicts announces nothing again (and an adopted browser is not
sent the latest announcements on its keys: it has them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from relay.broker.link import BrokerState
from relay.core.notification import bounds_of, parse_notification
from relay.errors import NotificationError
from relay.links.handoff_wire import (
    Kind,
    Position,
    forward_body,
    position_body,
    position_of,
    verdicts_body,
    verdicts_of,
)
from relay.links.lease_wire import SharedVerdict
from relay.listeners.handoff import Channel
from relay.node.node import Node

log = logging.getLogger("relay.handoff")

#: How long the successor's hub holds a post for the broker's order before its broker
#: reads again (the old process' answer deadline); then the broker's own hold applies.
HOLD_SECONDS = 30.0


def forward_routed(node: Node, channel: Channel) -> Callable[[], None]:
    """Forward what ``node`` routes down ``channel`` from now on; return what stops it."""
    hub = node.hub

    def send(instance: str, payload: bytes | memoryview) -> None:
        if not channel.closed:
            channel.send(Kind.FORWARD, forward_body(instance, payload))

    if node.broker is not None:
        hub.routed = lambda instance, message: send(instance, message.payload)

        def unhook() -> None:
            hub.routed = None

        return unhook
    original = hub.forward

    def forward(instance: str, payload: memoryview, covered: frozenset[str]) -> None:
        if original is not None:
            original(instance, payload, covered)
        send(instance, payload)

    hub.forward = forward

    def restore() -> None:
        hub.forward = original

    return restore


def cannot_cut(node: Node) -> str | None:
    """Why a handoff cannot begin now, or None.

    In broker mode the cut needs Redis: while it is away, posts are
    delivered where they are taken, with no position to cut at.
    """
    broker = node.broker
    if broker is not None and broker.state is not BrokerState.UP:
        return f"the broker is {broker.state.value} here; hand over once it is up"
    return None


def position(node: Node) -> dict[str, Any]:
    """The ``position`` field of ``LISTENERS`` and ``DONE``: none in mesh mode."""
    if node.broker is None:
        return {}
    return position_body(node.broker.inbound.position())


def heard_verdicts(node: Node) -> dict[str, Any]:
    """The ``verdicts`` field of ``LISTENERS``: none in mesh mode or without cluster status."""
    checks = node.status_monitor
    if node.broker is None or checks is None:
        return {}
    return verdicts_body(checks.heard())


def read_listeners(body: dict[str, Any]) -> tuple[Position | None, list[SharedVerdict]]:
    """What a ``LISTENERS`` body says beyond the sockets: position and verdicts.

    Raises:
        HandoffError: either is unreadable.
    """
    return position_of(body), verdicts_of(body)


class Resumption:
    """The successor's side of the cut: deliver what is forwarded, then read Redis from there."""

    def __init__(
        self, node: Node, start: Position | None, verdicts: Sequence[SharedVerdict] = ()
    ) -> None:
        """Hold ``node``'s broker back until ``resume``, which reads from ``start`` on.

        ``verdicts`` were announced by the old process already. Call before
        ``node.start``; nothing changes in mesh mode.
        """
        self._node = node
        self._bounds = bounds_of(node.config.limits)
        self._position = start
        if node.broker is None:
            return
        node.broker.hold_reading()
        # Posts taken before the broker reads again wait for their place in Redis.
        node.hub.set_ordering(True, hold_seconds=HOLD_SECONDS)
        if node.status_monitor is not None:
            node.status_monitor.already_heard(list(verdicts))

    def forwarded(self, body: dict[str, Any]) -> None:
        """Deliver a ``FORWARD``ed message here (its identity is remembered, as any's)."""
        payload = str(body["payload"]).encode()
        try:
            notification = parse_notification(payload, **self._bounds)
        except NotificationError as exc:
            log.warning("ignored a forwarded message: %s", exc)
            return
        self._node.hub.receive(str(body["instance"]), notification, payload)

    def done(self, body: dict[str, Any]) -> None:
        """The old process said ``DONE``: its position is where this one goes on.

        Raises:
            HandoffError: the position is unreadable.
        """
        given = position_of(body)
        if given is not None:
            self._position = given

    def resume(self) -> None:
        """Let the broker read from the position reached (done or not); idempotent."""
        broker = self._node.broker
        if broker is None:
            return
        last_ids, synced_ms = self._position or ({}, None)
        if self._position is None:
            # A restart whose state has no position (stored in mesh mode, or unusable).
            log.info("reading the broker's streams with no position to go on from, as at a start")
        else:
            log.info("reading the broker's streams from where the old process stopped")
        broker.resume_from(last_ids, synced_ms)
