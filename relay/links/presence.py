"""Presence: which nodes share a broker prefix, and how recently each said so. No I/O.

In broker mode every node (each worker of a ``--workers`` node) announces
itself in Redis every ``presence_interval_seconds``: an :class:`Announcement`
stored under ``<prefix>:presence:<fingerprint>`` with an expiry of
``GONE_AFTER`` intervals, its fingerprint indexed in the sorted set
``<prefix>:presence`` scored by Redis' time of the announcement. The same
round reads every announcement back (``broker/presence.py`` does the Redis
side); a :class:`~relay.links.roster.Roster` keeps the last reading and
ages it on an injected clock, so a verdict is as of the moment it is asked for:

- fresh: announced within ``STALE_AFTER`` intervals (a healthy node's age
  reaches two intervals at most: one between its announcements, one between
  the reader's reads);
- stale: it missed about two announcements;
- gone: older than ``GONE_AFTER`` intervals; Redis has expired its record too.

Every age is measured on Redis' clock, never by comparing two nodes' clocks.

In mesh mode (no broker) each node POSTs the same record to its peers
(``PRESENCE_PATH``, ``relay.peering.presence``); the receiver's roster
takes each as it comes (``Roster.heard``), aged on the receiver's clock
from its arrival, under the same bounds.
"""

from __future__ import annotations

import enum
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from relay import __version__
from relay.core.snapshot import NodeSnapshot

#: An announcement older than this many of its node's intervals is stale...
STALE_AFTER = 2.5
#: ...and older than this many is gone (its Redis key expires then).
GONE_AFTER = 4.0
#: The record format; a reader skips records of a format it does not know.
FORMAT = 1
#: Mesh mode: where a node POSTs its record to each peer's admin port.
PRESENCE_PATH = "/peer/presence"

#: Stores one announcement, indexes it, forgets the index entries whose
#: record expired, and returns Redis' time (ms), 1 if this node's record was
#: still there before it (0: expired, or Redis lost it), then (fingerprint,
#: announced at ms, record) for every node still announced under the prefix.
#: KEYS[1]: the index; ARGV: record key head, fingerprint, record, expiry (ms).
ANNOUNCE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[4])
local kept = redis.call('EXISTS', ARGV[1] .. ARGV[2])
redis.call('SET', ARGV[1] .. ARGV[2], ARGV[3], 'PX', ttl)
redis.call('ZADD', KEYS[1], now, ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
local names = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {now, kept}
for i = 1, #names, 2 do
  local record = redis.call('GET', ARGV[1] .. names[i])
  if record then
    table.insert(out, names[i])
    table.insert(out, names[i + 1])
    table.insert(out, record)
  else
    redis.call('ZREM', KEYS[1], names[i])
  end
end
return out
"""


class PresenceKeys:
    """The presence key names under one broker prefix."""

    def __init__(self, prefix: str) -> None:
        """Name the index and the records under ``prefix``."""
        self.index = f"{prefix}:presence"
        self.record_head = f"{prefix}:presence:"


class Freshness(enum.Enum):
    """What an announcement's age says about its node."""

    FRESH = "fresh"
    STALE = "stale"
    GONE = "gone"


def freshness(age: float, interval: float) -> Freshness:
    """The verdict on an announcement ``age`` s old; its node announces every ``interval``."""
    if age > GONE_AFTER * interval:
        return Freshness.GONE
    if age > STALE_AFTER * interval:
        return Freshness.STALE
    return Freshness.FRESH


@dataclass(frozen=True, slots=True)
class Identity:
    """What stays the same over a process' life: who announces."""

    fingerprint: str
    #: The node this process belongs to (a worker's node is its supervisor): ``host:pid``.
    node: str
    host: str
    pid: int
    #: The worker's index under ``--workers``; None for a single-process node.
    worker: int | None
    version: str
    #: Unix time the process started.
    started_at: float
    #: Seconds between announcements.
    interval: float

    @classmethod
    def of_this_process(
        cls, fingerprint: str, *, worker: int | None, interval: float, started_at: float
    ) -> Identity:
        """This process' identity: broker presence and mesh presence announce the same.

        A worker's node is its supervisor (its parent process); a node
        without workers is itself.
        """
        host = socket.gethostname()
        pid = os.getpid()
        node_pid = os.getppid() if worker is not None else pid
        return cls(
            fingerprint=fingerprint,
            node=f"{host}:{node_pid}",
            host=host,
            pid=pid,
            worker=worker,
            version=__version__,
            started_at=round(started_at, 3),
            interval=interval,
        )


@dataclass(frozen=True, slots=True)
class Announcement:
    """One node's (one worker's) presence record, as stored in Redis."""

    identity: Identity
    browsers: int
    #: Messages per second taken in (posted here or received) and delivered to browsers.
    rate_in: float
    rate_out: float
    #: The node's link to Redis, and the posts it has waiting ("up", "down"...).
    broker_state: str
    broker_queue: int
    #: Peer links up, of those configured (this node's own entry left out).
    peers_up: int
    peers: int
    #: The cluster-status module's mode ("read-write"...), None when it is off.
    cluster_status: str | None
    #: Where the node is, ``host:admin port``: a restart keeps it (``relay.links.turnover``).
    address: str = ""

    def encode(self) -> bytes:
        """The record as stored: compact JSON with a format number."""
        body = asdict(self)
        body["format"] = FORMAT
        return orjson.dumps(body)

    @classmethod
    def decode(cls, raw: bytes) -> Announcement:
        """Read a stored record.

        Raises:
            ValueError: ``raw`` is not a record of this format (another
                version's, or not relay's at all).
        """
        try:
            body = orjson.loads(raw)
            if not isinstance(body, dict) or body.pop("format", None) != FORMAT:
                raise ValueError(f"not a presence record of format {FORMAT}")
            identity = Identity(**body.pop("identity"))
            announcement = cls(identity=identity, **body)
        except (orjson.JSONDecodeError, TypeError, AttributeError, KeyError) as exc:
            raise ValueError(f"not a presence record: {exc!r}") from None
        _check_numbers(announcement)
        _check_texts(announcement)
        return announcement


def _check_numbers(found: Announcement) -> None:
    """Refuse a record whose figures are not numbers: the totals add them up."""
    numbers = (found.identity.interval, found.identity.started_at, found.rate_in, found.rate_out)
    counts = (found.identity.pid, found.browsers, found.broker_queue, found.peers_up, found.peers)
    if not all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers):
        raise ValueError("a presence record with a figure that is not a number")
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts):
        raise ValueError("a presence record with a count that is not a whole number")
    if found.identity.interval <= 0:
        raise ValueError("a presence record without a positive interval")


def _check_texts(found: Announcement) -> None:
    """Refuse a record whose names are not text: members are sorted and shown by them."""
    ident = found.identity
    texts = (ident.fingerprint, ident.node, ident.host, ident.version, found.broker_state)
    if not all(isinstance(text, str) for text in (*texts, found.address)):
        raise ValueError("a presence record with a name that is not text")
    if not isinstance(found.cluster_status, str | None):
        raise ValueError("a presence record with a cluster-status mode that is not text")
    if not (ident.worker is None or type(ident.worker) is int):
        raise ValueError("a presence record with a worker that is not a whole number")


def announcement(
    snapshot: NodeSnapshot, identity: Identity, rates: Rates, address: str = ""
) -> Announcement:
    """What ``snapshot`` says to the other nodes; ``rates`` turns its counters into rates.

    ``address`` is where the node is (``host:admin port``).
    """
    readings = snapshot.instances.values()
    peers = [peer for peer in snapshot.peers if not peer.is_self]
    broker = snapshot.broker
    mode = None if snapshot.cluster_status is None else snapshot.cluster_status.mode
    return Announcement(
        identity=identity,
        browsers=snapshot.connections,
        rate_in=rates.rate("in", sum(r.messages_in for r in readings)),
        rate_out=rates.rate("out", sum(r.messages_out for r in readings)),
        broker_state="off" if broker is None else broker.state,
        broker_queue=0 if broker is None else broker.queue,
        peers_up=sum(1 for peer in peers if peer.state == "up"),
        peers=len(peers),
        cluster_status=mode,
        address=address,
    )


class Rates:
    """Per-second rates of growing counters, between one call and the next."""

    def __init__(self, clock: Callable[[], float]) -> None:
        """Measure time on ``clock`` (seconds)."""
        self._clock = clock
        self._last: dict[str, tuple[float, int]] = {}

    def rate(self, name: str, total: int) -> float:
        """How fast ``name`` grew since the last call (0.0 the first time), rounded to 0.1."""
        now = self._clock()
        last = self._last.get(name)
        self._last[name] = (now, total)
        if last is None or now <= last[0]:
            return 0.0
        return round(max(0, total - last[1]) / (now - last[0]), 1)


@dataclass(frozen=True, slots=True)
class Sighting:
    """An announcement as one reading found it, and how old it was then (seconds)."""

    announcement: Announcement
    age: float


@dataclass(frozen=True, slots=True)
class Listing:
    """One round's reading of the prefix, as the announce script returned it."""

    sightings: list[Sighting]
    #: Records under the prefix that are not relay's, or not of this format.
    unreadable: int
    #: Whether this node's own record was still in Redis when it announced.
    own_kept: bool


def parse_listing(reply: Sequence[Any]) -> Listing:
    """The announce script's reply as sightings, counting the unreadable records.

    Raises:
        ValueError: the reply does not have the script's shape.
    """
    if len(reply) < 2 or (len(reply) - 2) % 3:
        raise ValueError("a presence listing of the wrong shape")
    now_ms = int(reply[0])
    sightings = []
    unreadable = 0
    for at in range(2, len(reply), 3):
        _, score, record = reply[at : at + 3]
        try:
            found = Announcement.decode(bytes(record))
        except ValueError:
            unreadable += 1
            continue
        age = max(0, now_ms - int(float(score))) / 1000
        sightings.append(Sighting(found, age))
    return Listing(sightings, unreadable, own_kept=bool(int(reply[1])))
