"""Where a message this node accepted goes next: to its peers, to the broker, or both.

Pure: it decides, and calls what it is given. A mesh node hands every message
to its peer links (each leaves out the nodes in ``covered``). A broker-mode
node publishes every message to Redis once, where every other broker-mode
node receives it. During a migration from an Aphlict mesh (a ``cluster`` list
next to the ``broker``), what an application server posted to a broker-mode
node also goes to the listed peers, which know nothing of Redis; a message
that came from a peer does not: the Aphlict nodes pass it among themselves,
and the broker-mode nodes get it from Redis, so forwarding it again would only
make copies (and those that reach a relay node are dropped by identity there).
"""

from __future__ import annotations

from collections.abc import Callable

from relay.core.hub import Forward

#: ``publish(instance, payload)``: queue a stamped message for the broker; never blocks.
Publish = Callable[[str, memoryview], None]


def posted_here(covered: frozenset[str]) -> bool:
    """Whether an application server posted the message to this very node.

    ``covered`` is what the hub hands on: the message's ``touched`` list, the
    nodes its sender covers, and this node. Only this node in it means nobody
    had the message before.
    """
    return len(covered) == 1


def forward_for(to_peers: Forward, publish: Publish | None) -> Forward:
    """The hub's ``forward``: to the peers only, or (with a broker) as the migration rule says."""
    if publish is None:
        return to_peers

    def to_broker(instance: str, payload: memoryview, covered: frozenset[str]) -> None:
        publish(instance, payload)
        if posted_here(covered):
            to_peers(instance, payload, covered)

    return to_broker
