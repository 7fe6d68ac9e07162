"""What relay keeps in systemd's file descriptor store across a restart, and how it reads it back.

Pure functions and records; no I/O (``relay.process.fdstore`` talks to
systemd, ``relay.node.restart`` cuts and adopts). On a stop, relay stores
under these names (``FDNAME=``):

- ``relay-client-N`` / ``relay-admin-N``: the N-th client / admin listening
  socket, in config order;
- ``relay-waiting-N``: each plain connection the N-th admin listener had
  accepted and still read no byte of a second after its connect, when it
  stopped (an application server's pool opened ahead; at most
  ``relay.node.restart.WAITING_KEPT``), served by the next process as if
  it had accepted it;
- ``b``: every browser socket that can move, in messages of at most
  :data:`FDS_PER_MESSAGE` (a name of one letter: see :func:`browser_room`);
- ``relay-state``: a memfd holding a :class:`StoredState` (JSON), which says
  what each browser socket was (its :class:`ConnectionState`), keyed by the
  socket's own addresses: systemd passes the descriptors back in an order of
  its own, so the key is what the kernel says the socket is, not a position;
  in broker mode it also says where the process stood in Redis' streams
  (the handoff's :data:`~relay.links.handoff_wire.Position`), where the next
  process starts reading.

A browser relay still owed bytes when it stopped (a slow reader: see
``ConnectionState.owed``) has its state under ``owing``, not
``connections``: a relay of an older release, which does not know owed
bytes, finds no state for its socket and closes it (the browser reconnects
and replays), where it would otherwise serve it with those bytes dropped,
its stream cut mid-frame. The others it keeps as ever: the format stays 1.

On the next start systemd passes them at descriptor 3 onwards with
``LISTEN_FDS``, ``LISTEN_FDNAMES`` and ``LISTEN_PID`` (sd_listen_fds(3)),
read by :func:`listen_fds`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from relay.links.handoff_wire import (
    ConnectionState,
    HandoffError,
    Position,
    position_body,
    position_of,
    verdicts_body,
    verdicts_of,
)
from relay.links.lease_wire import SharedVerdict

#: The first descriptor systemd passes (``SD_LISTEN_FDS_START``).
LISTEN_FDS_START = 3
#: Linux takes at most 253 descriptors in one SCM_RIGHTS message.
FDS_PER_MESSAGE = 253
#: The names relay stores under (``FDNAME=``); a client listener's is ``relay-client-N``.
CLIENT = "relay-client"
ADMIN = "relay-admin"
WAITING = "relay-waiting"
BROWSER = "b"
STATE = "relay-state"
#: The format of ``relay-state``; a state of another version is stale.
STATE_VERSION = 1
#: Longest environment string execve(2) takes (``MAX_ARG_STRLEN``): ``LISTEN_FDNAMES=...``
#: longer than this, and systemd cannot start relay at all.
ENV_STRING_LIMIT = 32 * 4096 - 1
#: The largest ``relay-state`` relay reads back (its history included).
STATE_LIMIT = 256 * 1024 * 1024


class FdStoreError(ValueError):
    """What systemd passed is not a store relay can use (stale, malformed, another program's)."""


def listener_name(kind: str, index: int) -> str:
    """The ``FDNAME`` of the ``index``-th listening socket of ``kind`` (client or admin)."""
    return f"relay-{kind}-{index}"


def waiting_name(index: int) -> str:
    """The ``FDNAME`` of an admin connection with nothing read, of the ``index``-th listener."""
    return f"{WAITING}-{index}"


def store_message(name: str, *, poll: bool = True) -> bytes:
    """The sd_notify message that stores the descriptors sent with it under ``name``.

    ``poll=False`` (``FDPOLL=0``) for a memfd: systemd cannot poll it for a hang-up.
    """
    lines = ["FDSTORE=1", f"FDNAME={name}"]
    if not poll:
        lines.append("FDPOLL=0")
    return "\n".join(lines).encode()


def remove_message(name: str) -> bytes:
    """The sd_notify message that makes systemd close and forget what it keeps under ``name``."""
    return f"FDSTOREREMOVE=1\nFDNAME={name}".encode()


def browser_room(other_names: Sequence[str]) -> int:
    """How many browsers fit in ``LISTEN_FDNAMES`` beside ``other_names`` (listeners, state).

    systemd names every stored descriptor in one environment variable, which
    the kernel caps (:data:`ENV_STRING_LIMIT`); each browser costs its name
    and a colon, hence a name of one letter: 65,000 browsers fit.
    """
    # Each name and its colon, less the colon after the last one.
    used = len("LISTEN_FDNAMES=") + sum(len(name) + 1 for name in other_names) - 1
    return max(0, (ENV_STRING_LIMIT - used) // (len(BROWSER) + 1))


def chunks(fds: Sequence[int], size: int = FDS_PER_MESSAGE) -> Iterator[Sequence[int]]:
    """``fds`` in groups small enough for one SCM_RIGHTS message each."""
    for start in range(0, len(fds), size):
        yield fds[start : start + size]


def listen_fds(environ: Mapping[str, str], pid: int) -> list[tuple[str, int]]:
    """The descriptors systemd passed this process (``pid``), with their names, in order.

    Empty when systemd passed none, or passed them to another process
    (``LISTEN_PID`` names it: the variables were inherited).

    Raises:
        FdStoreError: the variables are malformed (then none of the
            descriptors can be trusted to be what their names say).
    """
    count_text = environ.get("LISTEN_FDS", "")
    if not count_text or environ.get("LISTEN_PID", "") != str(pid):
        return []
    if not count_text.isdigit():
        raise FdStoreError(f"LISTEN_FDS={count_text!r} is not a count")
    count = int(count_text)
    names_text = environ.get("LISTEN_FDNAMES")
    names = names_text.split(":") if names_text else ["unknown"] * count
    if len(names) != count:
        raise FdStoreError(f"LISTEN_FDNAMES names {len(names)} descriptors, LISTEN_FDS {count}")
    return [(name, LISTEN_FDS_START + index) for index, name in enumerate(names)]


def socket_key(local: object, peer: object) -> str:
    """What identifies one TCP connection on this host: its two addresses, as the kernel says."""
    return f"{_address(local)}>{_address(peer)}"


def _address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"[{address[0]}]:{address[1]}"
    return str(address)


@dataclass(frozen=True, slots=True)
class StoredState:
    """What ``relay-state`` holds: who stored it, and each browser socket's state by its key.

    ``history`` is the hub's history as ``relay.core.history`` exports it
    (opaque here), so a browser that reconnects after the restart still gets
    its replay. ``position`` (broker mode) is the newest stream id per
    instance delivered to the browsers stored, and Redis' time at the last
    reload: the next process reads the streams from exactly there, so what
    Redis took during the gap reaches them once. ``verdicts`` (broker mode)
    are the cluster-status verdicts announced to them already, which the
    next process does not announce again (as a handoff's successor).
    """

    pid: int
    version: str
    stored_at: float
    connections: dict[str, ConnectionState] = field(default_factory=dict)
    history: list[Any] = field(default_factory=list)
    position: Position | None = None
    verdicts: list[SharedVerdict] = field(default_factory=list)

    def encode(self) -> bytes:
        """The state as JSON bytes."""
        states = self.connections.items()
        return orjson.dumps(
            {
                "format": STATE_VERSION,
                "pid": self.pid,
                "version": self.version,
                "stored_at": self.stored_at,
                "connections": {key: state.to_json() for key, state in states if not state.owed},
                "owing": {key: state.to_json() for key, state in states if state.owed},
                "history": self.history,
            }
            | ({} if self.position is None else position_body(self.position))
            | (verdicts_body(self.verdicts) if self.verdicts else {})
        )

    @classmethod
    def decode(cls, data: bytes) -> StoredState:
        """Read a state made by :meth:`encode`.

        Raises:
            FdStoreError: not such a state, or one of another format.
        """
        try:
            raw = orjson.loads(data)
            if not isinstance(raw, dict):
                raise FdStoreError("relay-state is not a JSON object")
            if raw.get("format") != STATE_VERSION:
                raise FdStoreError(f"relay-state of format {raw.get('format')!r}, not ours")
            connections = raw["connections"]
            owing = raw.get("owing", {})
            history = raw.get("history", [])
            if not all(isinstance(records, dict) for records in (connections, owing)):
                raise FdStoreError("relay-state's connections are malformed")
            if not isinstance(history, list):
                raise FdStoreError("relay-state's history is malformed")
            return cls(
                pid=int(raw["pid"]),
                version=str(raw["version"]),
                stored_at=float(raw["stored_at"]),
                connections={
                    str(key): ConnectionState.from_json(value)
                    for key, value in (connections | owing).items()
                },
                history=history,
                position=position_of(raw),
                verdicts=verdicts_of(raw),
            )
        except HandoffError as exc:
            raise FdStoreError(f"relay-state: {exc}") from None
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            if isinstance(exc, FdStoreError):
                raise
            raise FdStoreError(f"relay-state is unreadable: {exc}") from None

    def age(self, now: float | None = None) -> float:
        """Seconds since the state was stored (wall clock: the processes differ)."""
        return (time.time() if now is None else now) - self.stored_at


@dataclass
class Passed:
    """What systemd passed at start, sorted by name: listeners by index, browsers, the state."""

    clients: dict[int, int] = field(default_factory=dict)
    admins: dict[int, int] = field(default_factory=dict)
    browsers: list[int] = field(default_factory=list)
    #: Admin connections with nothing read: (the index of their listener, descriptor).
    waiting: list[tuple[int, int]] = field(default_factory=list)
    states: list[int] = field(default_factory=list)
    #: Descriptors under names relay does not know (another program's, an older relay's).
    unknown: list[tuple[str, int]] = field(default_factory=list)

    @classmethod
    def sort(cls, named: Sequence[tuple[str, int]]) -> Passed:
        """Sort ``(name, fd)`` pairs (from :func:`listen_fds`) by what relay stored them as."""
        passed = cls()
        for name, fd in named:
            kind, _, digits = name.rpartition("-")
            index = int(digits) if digits.isdigit() and int(digits) < 1000 else None
            if name == BROWSER:
                passed.browsers.append(fd)
            elif name == STATE:
                passed.states.append(fd)
            elif kind == WAITING and index is not None:
                passed.waiting.append((index, fd))
            elif kind in (CLIENT, ADMIN) and index is not None:
                listeners = passed.clients if kind == CLIENT else passed.admins
                if index in listeners:
                    passed.unknown.append((name, fd))  # stored twice: keep the first
                else:
                    listeners[index] = fd
            else:
                passed.unknown.append((name, fd))
        return passed

    @property
    def names(self) -> set[str]:
        """Every name passed, to tell systemd to forget them once relay holds the descriptors."""
        names = {listener_name("client", i) for i in self.clients}
        names |= {listener_name("admin", i) for i in self.admins}
        names |= {waiting_name(i) for i, _ in self.waiting}
        if self.browsers:
            names.add(BROWSER)
        if self.states:
            names.add(STATE)
        return names | {name for name, _ in self.unknown}

    def all_fds(self) -> list[int]:
        """Every descriptor passed, whatever its name."""
        return [
            *self.clients.values(),
            *self.admins.values(),
            *self.browsers,
            *(fd for _, fd in self.waiting),
            *self.states,
            *(fd for _, fd in self.unknown),
        ]

    def __bool__(self) -> bool:
        """Whether systemd passed anything at all."""
        return bool(
            self.clients
            or self.admins
            or self.browsers
            or self.waiting
            or self.states
            or self.unknown
        )
