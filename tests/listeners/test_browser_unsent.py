"""``BrowserConnection.unsent``: what relay wrote that its transport has not sent yet.

No transport gives its buffer back; the connection keeps the chunks it
wrote until the transport says (``get_write_buffer_size``) they are sent.
Here a transport stands in for one over a socket whose kernel takes what
the test lets it, in order, and the connection's account must be exactly
the transport's buffer after every write and every drain.
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any, cast

from relay.listeners.browser import BrowserConnection


class _Transport:
    """Sends what the kernel has room for, in order, and holds the rest."""

    def __init__(self) -> None:
        self.room = 0
        self.sent = b""
        self.pending = b""

    def write(self, data: bytes) -> None:
        self.pending += data
        self._send()

    def drain(self, count: int) -> None:
        """The browser read ``count`` bytes: the kernel takes that much more."""
        self.room += count
        self._send()

    def _send(self) -> None:
        taken = min(self.room, len(self.pending))
        self.room -= taken
        self.sent += self.pending[:taken]
        self.pending = self.pending[taken:]

    def get_write_buffer_size(self) -> int:
        return len(self.pending)


def _connection(transport: _Transport) -> BrowserConnection:
    limits = SimpleNamespace(browser_message_bytes=65536)
    listener = SimpleNamespace(origins=None, extensions=None, limits=limits)
    connection = BrowserConnection(cast(Any, listener))
    connection._transport = cast(Any, transport)
    connection._open = True
    return connection


def _write(connection: BrowserConnection, data: bytes) -> None:
    """What the coalescer does: one write of what was queued."""
    connection._queued = data
    connection.write_queued(0.0)


def test_nothing_is_kept_while_the_kernel_takes_everything() -> None:
    transport = _Transport()
    transport.room = 10_000
    connection = _connection(transport)
    for _ in range(5):
        _write(connection, b"frame")
    assert connection.unsent() == b""
    assert connection._unsent is None  # no record on the usual path


def test_the_unsent_tail_may_begin_inside_an_earlier_write() -> None:
    transport = _Transport()
    transport.room = 3
    connection = _connection(transport)
    _write(connection, b"abcdef")  # "abc" sent
    _write(connection, b"ghij")
    assert connection.unsent() == b"defghij" == transport.pending
    transport.drain(5)  # "defgh" sent meanwhile
    _write(connection, b"kl")
    assert connection.unsent() == b"ijkl" == transport.pending
    assert list(connection._unsent or ()) == [b"ghij", b"kl"]  # "abcdef" no longer kept


def test_the_account_matches_the_transport_after_any_writes_and_drains() -> None:
    rng = random.Random(7)
    transport = _Transport()
    connection = _connection(transport)
    written = b""
    for step in range(2000):
        if rng.random() < 0.6:
            data = bytes([step % 251]) * rng.randint(1, 300)
            written += data
            _write(connection, data)
        else:
            transport.drain(rng.randint(0, 600))
        assert connection.unsent() == transport.pending
    assert transport.sent + transport.pending == written
