"""What an old relay process and its successor say to each other during a handoff.

Pure functions and records; no I/O. The two talk over a private
``SOCK_SEQPACKET`` unix socket: every datagram is one *piece*, a flag byte
(``MORE`` when the message continues in the next piece) then part of the
message; a message is a kind byte then a JSON body. File descriptors
(listening sockets, browser sockets) travel with the last piece of their
message. The conversation (``relay.node.handoff`` carries it out):

- successor: ``HELLO`` {version, pid[, admin_connections: true][,
  owed_bytes: true][, pidfile]} (``admin_connections``: it takes
  ``ADMIN_CONNECTIONS``; ``owed_bytes``: it takes connections with bytes
  owed, see below; an older successor does not say, and is sent none of
  either; ``pidfile``: the absolute path of the pidfile it writes once the
  handoff is done, which the old process then leaves to it);
- old: ``LISTENERS`` {kinds[, position, verdicts]} + the client listening
  sockets, in config order;
- old: ``CONNECTIONS`` {connections: [state records]} + their sockets, in
  batches; successor: ``ADOPTED`` {batch, count} for each;
- old: ``FORWARD`` {instance, payload} for every message it routed since
  ``LISTENERS``, in the same ordered stream: a message forwarded after a
  connection's batch is the successor's to deliver to it, one forwarded
  before was delivered by the old process (the cut);
- old: ``ADMIN`` + the admin listening sockets; then, where it had any,
  ``ADMIN_CONNECTIONS`` {listeners: [index per socket]} + the admin
  connections it had read nothing of when it stopped accepting (served
  by the successor from ``DONE`` on, as the listening sockets are; in
  messages of at most :data:`BATCH_SOCKETS`); then
  ``DONE`` {moved[, position]} once its own admin listener has finished its
  last request;
- old, instead of the rest, when it gives up: ``ABORT`` {resumed: [batch
  numbers]}, the batches whose connections it will serve again (their
  acknowledgement did not reach it); successor: ``RELEASED`` {released:
  [batch numbers][, keys: [[batch, position, [keys]]], unadopted: [[batch,
  position]]]} once it has dropped its descriptors of them, and it then
  exits without serving. ``keys`` are the subscriptions of each connection
  that changed them while the successor served it, ``unadopted`` the
  connections it could not serve (each by its batch and its record's
  position there). The old process resumes those batches only after
  ``RELEASED`` or the successor's exit (``relay.node.handoff_abort``). A
  channel that ends before ``DONE`` is a failed handoff too.

After its ``DONE`` the old process sends nothing more, and after its own
``DONE`` neither does the successor (but ``RELEASED`` in answer to a late
``ABORT``): whichever closes first leaves nothing unread at the other end.
(Closing a unix socket with unread data resets the other end, and the
kernel reports the reset before the datagrams still queued there, so a
forwarded message left unread would hide the ``DONE`` behind it.)

In broker mode the old process also says where it stands in Redis' streams
(``position``: the newest id per instance, Redis' time at its last reload)
when it starts and when it is done: the successor reads the streams from
exactly there. It also passes the cluster-status verdicts it has announced
(``verdicts``), so that the successor does not announce them again.

A browser connection's state at the cut is a :class:`ConnectionState`; the
bytes it sent after its last complete frame are those its frame-level
protocol kept (``relay.core.websocket.ServerFrames.unparsed``). The bytes
relay wrote to it that its socket had not taken yet (a slow reader's) are
its ``owed`` bytes, which the successor writes before anything else: at most
:data:`OWED_BYTES_LIMIT` a connection, so that its record (base64 in JSON,
4/3 of them) stays under half the channel's 64 MiB message limit. A
successor that does not say ``owed_bytes`` would drop them unread, cutting
the browser's stream mid-frame: it is sent only connections owed nothing.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from relay.links.broker_wire import StreamId
from relay.links.lease_wire import SharedVerdict, decode_verdict

#: Bytes of a message in one datagram: under Linux's default socket buffer (208 KiB).
PIECE_BYTES = 64 * 1024
#: Sockets per message: Linux takes at most 253 descriptors in one SCM_RIGHTS.
BATCH_SOCKETS = 200
#: Bytes of state records in one batch, so a batch stays a few pieces.
BATCH_BYTES = 256 * 1024
#: Most bytes owed to one browser that move with it: the default ``outbound_buffer_bytes``
#: (1 MiB) many times over; a connection owed more stays (and is closed with 1001).
OWED_BYTES_LIMIT = 16 * 1024 * 1024
#: The flag byte of a piece after which the message continues.
MORE = 1
LAST = 0


class HandoffError(ValueError):
    """A handoff message that cannot be read: the other process is not a relay handoff."""


class Kind(enum.IntEnum):
    """What a handoff message is; the first byte of every message."""

    HELLO = 1
    LISTENERS = 2
    CONNECTIONS = 3
    ADOPTED = 4
    FORWARD = 5
    ADMIN = 6
    DONE = 7
    ABORT = 8
    RELEASED = 9
    #: Admin connections that had sent nothing when the old process stopped accepting.
    ADMIN_CONNECTIONS = 10


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """What a browser connection is, apart from its socket, at the cut.

    ``listener`` is the index of the client listener (in config order) that
    accepted it; ``silent_for`` how many seconds ago it last sent anything;
    ``unparsed`` the bytes it sent after its last complete frame (a partial
    frame), ``fragments`` the text of a fragmented message not finished yet,
    ``owed`` the bytes relay wrote to it that its socket had not taken (whole
    frames, maybe but the start of the first): the next process writes them first.
    """

    listener: int
    address: str
    instance: str
    keys: tuple[str, ...]
    pinged: bool
    silent_for: float
    unparsed: bytes = b""
    fragments: bytes | None = None
    owed: bytes = b""

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object (bytes as base64; ``owed`` only when there are some)."""
        record: dict[str, Any] = {
            "l": self.listener,
            "a": self.address,
            "i": self.instance,
            "k": list(self.keys),
            "p": self.pinged,
            "s": self.silent_for,
            "u": base64.b64encode(self.unparsed).decode(),
            "f": None if self.fragments is None else base64.b64encode(self.fragments).decode(),
        }
        if self.owed:
            record["o"] = base64.b64encode(self.owed).decode()
        return record

    @classmethod
    def from_json(cls, raw: Any) -> ConnectionState:
        """Read a record made by :meth:`to_json`.

        Raises:
            HandoffError: ``raw`` is not such a record.
        """
        try:
            fragments = raw["f"]
            return cls(
                listener=int(raw["l"]),
                address=str(raw["a"]),
                instance=str(raw["i"]),
                keys=tuple(str(key) for key in raw["k"]),
                pinged=bool(raw["p"]),
                silent_for=float(raw["s"]),
                unparsed=base64.b64decode(raw["u"]),
                fragments=None if fragments is None else base64.b64decode(fragments),
                owed=base64.b64decode(raw.get("o", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise HandoffError(f"not a connection record: {exc}") from None

    def size(self) -> int:
        """A bound on the record's encoded size, for batching."""
        keys = sum(len(key) + 3 for key in self.keys)
        fragments = len(self.fragments or b"")
        return (
            120
            + len(self.address)
            + len(self.instance)
            + keys
            + 2 * len(self.unparsed)
            + 2 * fragments
            + 2 * len(self.owed)
        )


def encode(kind: Kind, body: dict[str, Any]) -> bytes:
    """One message: its kind byte, then its JSON body."""
    return bytes((kind,)) + orjson.dumps(body)


def decode(message: bytes) -> tuple[Kind, dict[str, Any]]:
    """The kind and body of a message made by :func:`encode`.

    Raises:
        HandoffError: an empty message, an unknown kind, or a body that is not a JSON object.
    """
    if not message:
        raise HandoffError("an empty handoff message")
    try:
        kind = Kind(message[0])
        body = orjson.loads(message[1:])
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise HandoffError(f"an unreadable handoff message: {exc}") from None
    if not isinstance(body, dict):
        raise HandoffError("a handoff message's body is not a JSON object")
    return kind, body


def pieces(message: bytes, size: int = PIECE_BYTES) -> list[bytes]:
    """``message`` cut into datagrams of at most ``size`` bytes, each with its flag byte."""
    step = size - 1
    chunks = [message[start : start + step] for start in range(0, len(message), step)] or [b""]
    last = len(chunks) - 1
    return [bytes((MORE if index < last else LAST,)) + chunk for index, chunk in enumerate(chunks)]


class Reassembly:
    """Puts messages back together from their pieces, in order."""

    def __init__(self, limit: int) -> None:
        """Refuse messages longer than ``limit`` bytes."""
        self._limit = limit
        self._parts: list[bytes] = []
        self._length = 0

    def add(self, piece: bytes) -> bytes | None:
        """Take one datagram; return the message it completes, or None.

        Raises:
            HandoffError: an empty datagram or a message over the limit.
        """
        if not piece:
            raise HandoffError("an empty handoff datagram")
        self._length += len(piece) - 1
        if self._length > self._limit:
            raise HandoffError(f"a handoff message over {self._limit} bytes")
        self._parts.append(piece[1:])
        if piece[0] == MORE:
            return None
        message = b"".join(self._parts)
        self._parts, self._length = [], 0
        return message


def batches(
    states: Iterable[ConnectionState],
    *,
    count: int = BATCH_SOCKETS,
    size: int = BATCH_BYTES,
) -> Iterator[list[int]]:
    """Indices of ``states`` grouped in batches of at most ``count`` records and ``size`` bytes.

    A record larger than ``size`` on its own still gets a batch of its own.
    """
    batch: list[int] = []
    used = 0
    for index, state in enumerate(states):
        cost = state.size()
        if batch and (len(batch) >= count or used + cost > size):
            yield batch
            batch, used = [], 0
        batch.append(index)
        used += cost
    if batch:
        yield batch


def forward_body(instance: str, payload: bytes | memoryview) -> dict[str, Any]:
    """The body of a ``FORWARD`` message: a message as the old process encoded it."""
    return {"instance": instance, "payload": bytes(payload).decode()}


def abort_body(resumed: Iterable[int]) -> dict[str, Any]:
    """The body of an ``ABORT`` message: the batches the old process serves again once released."""
    return {"resumed": sorted(resumed)}


def resumed_of(body: dict[str, Any]) -> set[int]:
    """The batch numbers an ``ABORT`` body names.

    Raises:
        HandoffError: a ``resumed`` field that is not a list of numbers.
    """
    return _batches(body, "resumed")


#: A connection in a handoff: its batch's number and its record's position in the batch.
Place = tuple[int, int]


def released_body(
    released: Iterable[int],
    keys: Mapping[Place, Iterable[str]] | None = None,
    unadopted: Iterable[Place] = (),
) -> dict[str, Any]:
    """The body of a ``RELEASED`` message: the batches the successor no longer holds.

    ``keys``: the subscriptions of each connection that changed them while
    the successor served it, which the old process resumes it with;
    ``unadopted``: the connections it could not serve at all (the others got
    every message forwarded after their batch).
    """
    body: dict[str, Any] = {"released": sorted(released)}
    if keys:
        body["keys"] = [[batch, index, sorted(of)] for (batch, index), of in sorted(keys.items())]
    # Always there, if empty: a successor that does not say it (older code) may
    # have failed to serve some, and the old process then replays from the cut.
    body["unadopted"] = [list(place) for place in sorted(unadopted)]
    return body


def released_unadopted(body: dict[str, Any]) -> set[Place] | None:
    """The connections a ``RELEASED`` body says the successor could not serve.

    None when it does not say (a successor of older code): any may have failed.

    Raises:
        HandoffError: an ``unadopted`` field that is not a list of [batch, position].
    """
    if "unadopted" not in body:
        return None
    try:
        return {(int(batch), int(index)) for batch, index in body["unadopted"]}
    except (TypeError, ValueError) as exc:
        raise HandoffError(f"not a list of connections: {exc}") from None


def released_keys(body: dict[str, Any]) -> dict[Place, tuple[str, ...]]:
    """The changed subscriptions a ``RELEASED`` body gives, by connection (none: no change).

    Raises:
        HandoffError: a ``keys`` field that is not a list of [batch, position, [keys]].
    """
    try:
        return {
            (int(batch), int(index)): _strings(keys) for batch, index, keys in body.get("keys", ())
        }
    except (TypeError, ValueError) as exc:
        raise HandoffError(f"not a list of changed subscriptions: {exc}") from None


def _strings(values: Any) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise TypeError("keys are not a list of strings")
    return tuple(values)


def released_of(body: dict[str, Any]) -> set[int]:
    """The batch numbers a ``RELEASED`` body names.

    Raises:
        HandoffError: a ``released`` field that is not a list of numbers.
    """
    return _batches(body, "released")


def _batches(body: dict[str, Any], field: str) -> set[int]:
    """The batch numbers in ``body[field]``.

    Raises:
        HandoffError: a field that is missing or not a list of numbers.
    """
    try:
        return {int(number) for number in body[field]}
    except (KeyError, TypeError, ValueError) as exc:
        raise HandoffError(f"not a list of batches: {exc}") from None


def listener_kinds(kinds: Sequence[str]) -> dict[str, Any]:
    """The body of a ``LISTENERS`` or ``ADMIN`` message: what each passed socket serves."""
    return {"kinds": list(kinds)}


def hello_body(version: str, pid: int, pidfile: str | None = None) -> dict[str, Any]:
    """The body of the successor's ``HELLO``: who it is, and what it takes beyond browsers.

    Admin connections (``ADMIN_CONNECTIONS``), and browsers with bytes owed;
    and the pidfile it writes (absolute), if any.
    """
    body: dict[str, Any] = {
        "version": version,
        "pid": pid,
        "admin_connections": True,
        "owed_bytes": True,
    }
    if pidfile is not None:
        body["pidfile"] = pidfile
    return body


def successor_pidfile(hello: dict[str, Any]) -> str | None:
    """The pidfile the successor that said ``hello`` writes once the handoff is done, if any."""
    pidfile = hello.get("pidfile")
    return pidfile if isinstance(pidfile, str) and pidfile else None


def takes_admin_connections(hello: dict[str, Any]) -> bool:
    """Whether the successor that said ``hello`` takes ``ADMIN_CONNECTIONS``."""
    return hello.get("admin_connections") is True


def takes_owed_bytes(hello: dict[str, Any]) -> bool:
    """Whether the successor that said ``hello`` writes a connection's ``owed`` bytes first."""
    return hello.get("owed_bytes") is True


def admin_connections_body(listeners: Sequence[int]) -> dict[str, Any]:
    """The body of an ``ADMIN_CONNECTIONS`` message: each passed socket's admin listener."""
    return {"listeners": list(listeners)}


def admin_listeners_of(body: dict[str, Any], count: int) -> list[int]:
    """The admin listener (index in config order) of each of the ``count`` sockets passed.

    Raises:
        HandoffError: a ``listeners`` field that is not one number per socket.
    """
    try:
        listeners = [int(index) for index in body["listeners"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise HandoffError(f"not a list of admin listeners: {exc}") from None
    if len(listeners) != count:
        raise HandoffError(f"{len(listeners)} admin listeners named for {count} connections")
    if any(index < 0 for index in listeners):
        raise HandoffError(f"not a list of admin listeners: {listeners} names one below 0")
    return listeners


#: Where a broker-mode process stands in the streams: newest id per instance, last reload (ms).
Position = tuple[dict[str, StreamId], int | None]


def position_body(position: Position) -> dict[str, Any]:
    """The ``position`` field of ``LISTENERS`` and ``DONE`` in broker mode."""
    last_ids, synced_ms = position
    ids = {instance: str(stream_id) for instance, stream_id in last_ids.items()}
    return {"position": {"ids": ids, "synced": synced_ms}}


def position_of(body: dict[str, Any]) -> Position | None:
    """The position a ``LISTENERS`` or ``DONE`` body carries, or None (mesh mode).

    Raises:
        HandoffError: a ``position`` field that is not one.
    """
    raw = body.get("position")
    if raw is None:
        return None
    try:
        synced = raw["synced"]
        ids = {str(name): StreamId.parse(value) for name, value in raw["ids"].items()}
        return ids, None if synced is None else int(synced)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HandoffError(f"not a stream position: {exc}") from None


def verdicts_body(verdicts: Iterable[SharedVerdict]) -> dict[str, Any]:
    """The ``verdicts`` field of ``LISTENERS``: the cluster-status verdicts announced already."""
    return {"verdicts": [verdict.encode().decode() for verdict in verdicts]}


def verdicts_of(body: dict[str, Any]) -> list[SharedVerdict]:
    """The verdicts a ``LISTENERS`` body carries (none in mesh mode).

    Raises:
        HandoffError: one that is not a verdict.
    """
    try:
        return [decode_verdict(str(raw)) for raw in body.get("verdicts", ())]
    except (TypeError, ValueError) as exc:
        raise HandoffError(f"not a cluster-status verdict: {exc}") from None
