"""The presence roster: who announces in the cluster, as last heard, aged on a clock. No I/O.

Broker mode (``relay.broker.presence``) hands a :class:`Roster` each reading
of the prefix; mesh mode (``relay.peering.presence``) each record a peer
posts. It answers ``/status/``'s ``nodes`` entry and tells the turnover
(``relay.links.turnover``) who is present. The records and their verdicts
are ``relay.links.presence``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from relay.links.presence import (
    GONE_AFTER,
    STALE_AFTER,
    Announcement,
    Freshness,
    Identity,
    Sighting,
    freshness,
)
from relay.links.turnover import Turnover


class Roster:
    """Who announces in the cluster, as last heard, aged on an injected clock.

    Broker mode hands it each whole reading of the prefix (``update``); mesh
    mode each announcement a peer posts as it comes (``heard``). Either way
    an announcement's age is measured on one clock only: Redis', then this
    node's since the reading, or this node's from the moment it arrived.

    A reading after a recovery lists only the nodes that announced since
    Redis came back (or came back empty): the others are held, not gone,
    until they have gone unheard for the gone bound while this node could
    hear them (see ``update``).
    """

    def __init__(
        self, own: Identity, prefix: str | None, clock: Callable[[], float], settle: float = 0.0
    ) -> None:
        """Hold readings for the process ``own``, under ``prefix`` (None: a mesh).

        ``settle``: nodes first heard this long after the first reading
        count as joining (``relay.links.turnover``).
        """
        self.own = own
        self.prefix = prefix
        self._clock = clock
        #: By fingerprint: the last announcement and when it was made, on ``clock``.
        self._heard: dict[str, tuple[Announcement, float]] = {}
        self._read = False
        #: When the last reading was taken, on ``clock``: None before the first.
        self._read_at: float | None = None
        #: Nodes not heard afresh since a recovery, by fingerprint: how long this
        #: node could not hear them (which their age leaves out), and the time of
        #: the last reading before the first such recovery (an announcement made
        #: after it is fresh).
        self._held: dict[str, tuple[float, float]] = {}
        self.turnover = Turnover(clock, settle)
        #: Why the last announcement failed; None once one succeeds.
        self.last_error: str | None = None
        self.unreadable = 0

    def update(
        self, sightings: Sequence[Sighting], unreadable: int = 0, *, own_kept: bool = True
    ) -> None:
        """Take a new reading of every node, made now: those not in it are gone...

        ...unless the reading follows a recovery: a round that succeeds after
        failed ones, or one that found this node's own record no longer in
        Redis (``own_kept`` false) before its expiry, because Redis lost it
        (restarted empty). Such a reading lists only the nodes that announced
        since, and records made before that may expire before their nodes'
        next round: every node known is held until it announces afresh, its
        age leaving out the time since the last reading, and is gone once
        that passes the gone bound. A node that announces meanwhile was never
        away; one that left is gone ``GONE_AFTER`` intervals after the
        recovery at the latest.
        """
        now = self._clock()
        reading = {
            s.announcement.identity.fingerprint: (s.announcement, now - s.age) for s in sightings
        }
        if self._recovering(now, own_kept):
            assert self._read_at is not None
            deaf, before = now - self._read_at, self._read_at
            # Every node known may have missed rounds meanwhile, whether this
            # reading misses it or still lists the record it made before.
            for fingerprint in self._heard:
                credit, since = self._held.get(fingerprint, (0.0, before))
                self._held[fingerprint] = (credit + deaf, since)
        held = {}
        for fingerprint, (credit, since) in self._held.items():
            found, made = reading.get(fingerprint) or self._heard[fingerprint]
            if made > since:
                continue  # announced since: heard afresh
            if not _gone(found, now - made - credit):
                held[fingerprint] = (credit, since)
                reading[fingerprint] = (found, made)
        self._held = held
        self._heard = reading
        self._read = True
        self._read_at = now
        self.unreadable = unreadable
        self.last_error = None

    def _recovering(self, now: float, own_kept: bool) -> bool:
        """Whether a reading made now may miss nodes that are there (see ``update``)."""
        if self._read_at is None:
            return False  # nothing known to miss
        if self.last_error is not None:
            return True
        # This node's record expires GONE_AFTER intervals after it announced:
        # missing sooner, Redis lost it, and every other record with it.
        return not own_kept and now - self._read_at < GONE_AFTER * self.own.interval

    def _gone(self, fingerprint: str, now: float) -> bool:
        """Whether a process in the roster is gone by now; a held one by its held age."""
        found, made = self._heard[fingerprint]
        credit, _ = self._held.get(fingerprint, (0.0, 0.0))
        return _gone(found, now - made - credit)

    def heard(self, found: Announcement) -> None:
        """One node's announcement, just arrived; forget those gone by now."""
        now = self._clock()
        self._heard[found.identity.fingerprint] = (found, now)
        self._held.pop(found.identity.fingerprint, None)
        self._read = True
        for fingerprint in [f for f in self._heard if self._gone(f, now)]:
            del self._heard[fingerprint]
            self._held.pop(fingerprint, None)

    def failed(self, reason: str) -> None:
        """The last round could not reach Redis; the old reading keeps ageing."""
        self.last_error = reason

    def others(self) -> list[str]:
        """The other nodes (not this one, nor its sibling workers) in the last reading."""
        nodes = {found.identity.node for found, _ in self._heard.values()}
        return sorted(nodes - {self.own.node})

    def members(self) -> list[dict[str, Any]]:
        """Every process not gone, as of now, ordered by node and worker."""
        now = self._clock()
        rows = []
        for fingerprint, (found, made) in self._heard.items():
            if self._gone(fingerprint, now):
                continue
            ident = found.identity
            age = max(0.0, now - made)
            verdict = freshness(age, ident.interval)
            if verdict is Freshness.GONE:  # held: missed rounds, not gone
                verdict = Freshness.STALE
            rows.append(_member(found, verdict, age, fingerprint == self.own.fingerprint))
        rows.sort(key=lambda row: (row["node"], row["worker"] or 0, row["fingerprint"]))
        return rows

    def status(self) -> dict[str, Any]:
        """The ``nodes`` entry of ``/status/``: members, totals, who came and who left."""
        members = self.members()
        self._look(members)
        return {
            "prefix": self.prefix,
            "interval_seconds": self.own.interval,
            "stale_after_seconds": STALE_AFTER * self.own.interval,
            "gone_after_seconds": GONE_AFTER * self.own.interval,
            "last_error": self.last_error,
            "unreadable": self.unreadable,
            "members": members,
            "totals": totals(members),
            "joined": self.turnover.joined(),
            "left": self.turnover.left(),
        }

    def _look(self, members: Sequence[Mapping[str, Any]]) -> None:
        """Show the turnover who is present, unless there is nothing trustworthy to show.

        Before the first reading nothing is known; while this node cannot
        reach Redis, its reading only ages (every node would seem to leave),
        so the last look stands until a round succeeds.
        """
        if not self._read or self.last_error is not None:
            return
        own = {m["place"] for m in members if m["self"]}
        self.turnover.look({m["place"] for m in members} - own)


def _gone(found: Announcement, age: float) -> bool:
    """Whether an announcement ``age`` seconds old (as heard) is gone."""
    return freshness(age, found.identity.interval) is Freshness.GONE


def _member(found: Announcement, verdict: Freshness, age: float, is_self: bool) -> dict[str, Any]:
    ident = found.identity
    return {
        "node": ident.node,
        "worker": ident.worker,
        "fingerprint": ident.fingerprint,
        "host": ident.host,
        "pid": ident.pid,
        "self": is_self,
        "version": ident.version,
        "state": verdict.value,
        "last_seen_seconds": round(age, 1),
        "started_at": ident.started_at,
        "browsers": found.browsers,
        "rate_in": found.rate_in,
        "rate_out": found.rate_out,
        "broker": found.broker_state,
        "broker_queue": found.broker_queue,
        "peers_up": found.peers_up,
        "peers": found.peers,
        "cluster_status": found.cluster_status,
        "address": found.address,
        # What a node is known by across restarts; a record without an address, by its node.
        "place": found.address or ident.node,
    }


def totals(members: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The cluster's figures over ``members``: nodes, processes, browsers, rates, stale ones.

    Browsers and deliveries happen on one process each and add up.
    """
    return {
        "nodes": len({m["node"] for m in members}),
        "processes": len(members),
        "stale": sum(1 for m in members if m["state"] != Freshness.FRESH.value),
        "browsers": sum(int(m["browsers"]) for m in members),
        # Every node takes in every message of the cluster (that is how they
        # meet), so the cluster's rate in is the largest, not the sum.
        "rate_in": max((float(m["rate_in"]) for m in members), default=0.0),
        "rate_out": round(sum(float(m["rate_out"]) for m in members), 1),
    }
