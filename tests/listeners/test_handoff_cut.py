"""``cut_movable``: one round of the cut, bounded across every client listener."""

from __future__ import annotations

from typing import Any, cast

from relay.links.handoff_wire import ConnectionState
from relay.listeners.movable import MovableConnection, cut_movable


class _Connection(MovableConnection):
    """A connection that can move (or is in its handshake) without a socket."""

    def __init__(self, fd: int, *, handshaking: bool = False) -> None:  # no listener needed
        self.fd = fd
        self.handshaking = handshaking
        self.detached_from: int | None = None

    @property
    def in_handshake(self) -> bool:
        return self.handshaking

    @property
    def held(self) -> bool:
        return False

    def detach(
        self, listener_index: int, owed_room: int | None = None
    ) -> tuple[ConnectionState, int] | None:
        if self.handshaking:
            return None
        self.detached_from = listener_index
        state = ConnectionState(listener_index, "127.0.0.1", "i", (), False, 0.0)
        return state, self.fd


class _Listener:
    def __init__(self, connections: list[Any]) -> None:
        self._connections = connections

    def connections(self) -> list[Any]:
        return list(self._connections)


def test_the_limit_holds_across_listeners_and_the_rest_wait_for_another_round() -> None:
    first = [_Connection(fd) for fd in range(3)]
    second = [_Connection(fd) for fd in range(3, 6)]
    listeners = cast(Any, [_Listener(first), _Listener(second)])
    cut, _waiting = cut_movable(listeners, 4)
    assert [fd for _c, _s, fd in cut] == [0, 1, 2, 3]
    assert [state.listener for _c, state, _fd in cut] == [0, 0, 0, 1]
    assert second[1].detached_from is None  # left for the next round


def test_without_a_limit_everything_movable_is_cut_and_handshakes_are_counted() -> None:
    listeners = cast(
        Any,
        [
            _Listener([_Connection(1), _Connection(2, handshaking=True), object()]),
            _Listener([_Connection(3, handshaking=True), _Connection(4)]),
        ],
    )
    cut, waiting = cut_movable(listeners)
    assert [fd for _c, _s, fd in cut] == [1, 4]
    assert waiting == 2


class _Owing(_Connection):
    """A held connection, owed ``owed`` bytes: it moves where they fit."""

    def __init__(self, fd: int, owed: int) -> None:
        super().__init__(fd)
        self.owed = owed
        self.holding = True

    @property
    def held(self) -> bool:
        return self.holding

    def detach(
        self, listener_index: int, owed_room: int | None = None
    ) -> tuple[ConnectionState, int] | None:
        if not self.holding or owed_room is None or self.owed > owed_room:
            return None
        self.holding = False
        owed = b"x" * self.owed
        return ConnectionState(listener_index, "127.0.0.1", "i", (), False, 0.0, owed=owed), self.fd


def test_the_owed_room_holds_across_connections_and_the_rest_wait_held() -> None:
    owing = [_Owing(1, 4), _Owing(3, 4), _Owing(4, 4)]
    listeners = cast(Any, [_Listener([owing[0], _Connection(2), owing[1]]), _Listener([owing[2]])])
    cut, waiting = cut_movable(listeners, owed_room=10)
    assert [fd for _c, _s, fd in cut] == [1, 2, 3]
    assert waiting == 1  # held: the next round has room for it
    cut, waiting = cut_movable(listeners, owed_room=10)
    assert [fd for _c, _s, fd in cut] == [2, 4]  # 2: this fake moves again, as if new


def test_without_owed_room_no_connection_owed_bytes_moves() -> None:
    """For a successor of an older release: the held wait, and none of them is cut."""
    listeners = cast(Any, [_Listener([_Owing(1, 4), _Connection(2)])])
    cut, waiting = cut_movable(listeners)
    assert [fd for _c, _s, fd in cut] == [2]
    assert waiting == 1
