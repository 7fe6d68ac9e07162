"""The overload policy: what a node does with new posts while a peer link cannot keep up.

A peer that is up but whose queue is full is *congested*: more posts would
push its oldest queued messages out, so they would be lost although this node
accepted them. Under the "refuse" policy the node answers new posts from
application servers 503 instead (Phorge tries its admin servers in turn, so
the post goes to another node); under "drop" it accepts them and the peer's
oldest messages are dropped. Messages arriving from peers are always taken:
another node has accepted them already. Peers that are down are not
congested: their queues fill and drop by design until they come back.

Either way each refusal is counted, and one line is logged when an episode
starts and one when it ends. Pure: no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from relay.core.snapshot import OverloadReading

log = logging.getLogger("relay.overload")


class OverloadGuard:
    """Decides, per post, whether to take it; counts and logs episodes."""

    def __init__(self, policy: str) -> None:
        """Apply ``policy`` ("refuse" or "drop", ``peering.when_full``)."""
        self.policy = policy
        #: Posts answered 503 under the "refuse" policy.
        self.refused = 0
        #: Episodes so far (a run of posts that met a congested link).
        self.episodes = 0
        self.active = False
        self._refused_this_episode = 0

    def admit(self, congested: Sequence[str]) -> bool:
        """Whether to take a post from an application server, given the congested links."""
        if not congested:
            if self.active:
                self.active = False
                log.info(
                    "peer queues drained: taking posts again (%d refused in this episode)",
                    self._refused_this_episode,
                )
            return True
        if not self.active:
            self.active = True
            self.episodes += 1
            self._refused_this_episode = 0
            log.warning(
                "peer queues full (%s): %s",
                ", ".join(congested),
                "answering new posts 503 until they drain"
                if self.policy == "refuse"
                else "dropping their oldest messages",
            )
        if self.policy != "refuse":
            return True
        self.refused += 1
        self._refused_this_episode += 1
        return False

    def reading(self) -> OverloadReading:
        """The policy and its counters, for ``/status/`` and the metrics."""
        return OverloadReading(self.policy, self.active, self.refused, self.episodes)
