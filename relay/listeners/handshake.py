"""A browser's opening handshake: websockets' ``ServerProtocol``, fed the request head only.

The handshake is websockets' own (request parsing, origin check, extension
negotiation, the 101 or the refusal). What relay adds: the bytes past the
request head are kept out of websockets' parser, so that once the handshake
is answered the whole ``ServerProtocol`` (parser, buffers, request, response)
can be dropped and the connection go on with ``relay.core.websocket``; and the
answer to a plain HTTP request, a draining node or a refused connection.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Protocol

import websockets.http11
from websockets.exceptions import InvalidMessage
from websockets.extensions.base import ServerExtensionFactory
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.typing import LoggerLike, Origin

from relay.core.websocket import ServerFrames

#: Aphlict's answer to a plain HTTP request: Phorge's setup check expects 501.
PLAIN_HTTP_STATUS = 501
PLAIN_HTTP_BODY = "HTTP/501 Use Websockets\n"

#: The answer to a request websockets cannot read at all (a bad request line or header).
UNREADABLE_STATUS = 400
UNREADABLE_BODY = "relay could not read this HTTP request\n"

#: Longest request head a browser may send, and so its longest line. Node reads
#: request heads of up to 16 KiB whatever their lines, so Aphlict takes a Cookie
#: line that long: the client port is on Phorge's host, and browsers send it
#: Phorge's cookies and those of its parent domain (single sign-on ones run to
#: several KiB). A longer head gets Node's answer, 431.
MAX_HEAD_BYTES = 16 * 1024
HEAD_TOO_LARGE_STATUS = 431
HEAD_TOO_LARGE_BODY = "relay reads request heads of up to 16 KiB\n"

# websockets reads this module global at each line it parses; its default
# (8 KiB, WEBSOCKETS_MAX_LINE_LENGTH) would answer such a browser 431 where
# Aphlict connects it. An operator's larger setting is kept.
websockets.http11.MAX_LINE_LENGTH = max(websockets.http11.MAX_LINE_LENGTH, MAX_HEAD_BYTES)

#: What ends an HTTP request head (no request body: websockets refuses those).
_HEAD_END = b"\r\n\r\n"


def head_end(seen: bytes, data: bytes) -> int | None:
    """Where in ``data`` the request head ends (the offset past it), or None if not in it.

    ``seen`` is the last bytes of the head before ``data`` (up to 3), so an end
    split between two reads is found.
    """
    at = (seen + data).find(_HEAD_END)
    return None if at < 0 else at + len(_HEAD_END) - len(seen)


class Gate(Protocol):
    """What a handshake asks of its listener before it accepts a browser."""

    #: Connections refused or dropped by a limit, by reason (for metrics).
    rejected: Counter[str]
    #: True once the node drains for shutdown: new handshakes get 503.
    draining: bool

    def refused(self, reason: str, address: str, detail: str) -> None:
        """Count a refused browser (and log refusals at a bounded rate)."""


class Handshake:
    """websockets' server handshake for one connection, and where the request head ends."""

    __slots__ = ("_head", "_head_bytes", "_max_size", "_unreadable_answered", "protocol")

    def __init__(
        self,
        origins: Sequence[Origin | None] | None,
        extensions: Sequence[ServerExtensionFactory] | None,
        max_size: int | None,
        logger: LoggerLike,
    ) -> None:
        """Start a handshake with the listener's current settings."""
        self.protocol = ServerProtocol(
            origins=origins, extensions=extensions, max_size=max_size, logger=logger
        )
        self._max_size = max_size
        #: The last bytes of the request head so far, to find its end across reads.
        self._head = b""
        #: The request head's length so far: websockets bounds its lines (128 of them),
        #: not their sum, which would let one handshake hold 2 MiB.
        self._head_bytes = 0
        self._unreadable_answered = False

    def receive(self, data: bytes) -> tuple[list[Request], bytes]:
        """Feed the request head's bytes in ``data`` to websockets.

        Returns the request, once parsed, and the bytes past its head (frames
        sent along with it, which the frame-level protocol reads if the
        handshake is accepted). A head past ``MAX_HEAD_BYTES`` is not read
        further: ``refusal`` answers it.
        """
        if self._head_bytes > MAX_HEAD_BYTES:
            return [], b""
        end = head_end(self._head, data)
        if end is None:
            self._head = (self._head + data)[-(len(_HEAD_END) - 1) :]
            rest = b""
        else:
            self._head = b""
            data, rest = data[:end], data[end:]
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            return [], b""
        self.protocol.receive_data(data)
        events = self.protocol.events_received()
        requests = [event for event in events if isinstance(event, Request)]
        if requests and rest and _asks_to_upgrade(requests[0]) and self._ends_early(rest):
            # RFC 6455 has the browser wait for the answer before it sends frames;
            # websockets, reading them first, ends the connection on one that
            # closes or breaks the protocol without answering, and so does relay.
            # (What follows a plain HTTP request is no frame: it gets its 501.)
            self.protocol.fail(CloseCode.PROTOCOL_ERROR, "frames sent before the answer")
        return requests, rest

    def refusal(self, gate: Gate, address: str) -> bytes | None:
        """The refusal of a request websockets could not read, once; None if there is none.

        websockets answers a request line or header too long (414, 431), but
        ends the connection without a word on any other request it cannot
        parse. A request with a body (a plain POST) gets the 501 every plain
        request gets, as Aphlict answers it; anything else a 400 (a line
        ending in a bare LF too, which websockets reports as an end of
        stream: called from ``data_received``, the stream has not ended); and
        a head past ``MAX_HEAD_BYTES`` a 431, as Node answers it. The
        request's bytes are not quoted back. To be written before the
        protocol's own output, which ends the connection. Counted and logged
        (at a bounded rate, without the request's bytes) on ``gate``.
        """
        if self._unreadable_answered:
            return None
        if self._head_bytes > MAX_HEAD_BYTES and not self.protocol.eof_sent:
            self._unreadable_answered = True
            gate.refused("bad request", address, "request head over 16 KiB: 431")
            response = self.protocol.reject(HEAD_TOO_LARGE_STATUS, HEAD_TOO_LARGE_BODY)
            self.protocol.send_eof()  # websockets, which read none of it past the bound, ends it
            return response.serialize()
        failure = self.protocol.handshake_exc
        if not isinstance(failure, InvalidMessage):
            return None
        self._unreadable_answered = True
        cause = failure.__cause__
        # websockets (the locked 17.4) marks a refused body by these two exceptions alone.
        if isinstance(cause, NotImplementedError) or str(cause) == "unsupported request body":
            gate.refused("bad request", address, "plain HTTP with a body: 501")
            response = self.protocol.reject(PLAIN_HTTP_STATUS, PLAIN_HTTP_BODY)
        else:
            gate.refused("bad request", address, "not an HTTP request websockets reads: 400")
            response = self.protocol.reject(UNREADABLE_STATUS, UNREADABLE_BODY)
        return response.serialize()

    def _ends_early(self, rest: bytes) -> bool:
        """Whether frames sent along with the request would end the connection."""
        probe = ServerFrames()  # no extension is agreed on before the answer
        probe.receive_data(rest, self._max_size)
        return probe.eof_sent

    def answer(self, request: Request, gate: Gate, address: str, refusal: str | None) -> Response:
        """The response to ``request``: 101, or 501 (plain HTTP), 503 (draining, refused), 403...

        A 503 is counted on ``gate``. Not sent yet: ``protocol.send_response`` does.
        """
        ws = self.protocol
        if not _asks_to_upgrade(request):
            return ws.reject(PLAIN_HTTP_STATUS, PLAIN_HTTP_BODY)
        if gate.draining:
            # Not logged: during a drain every reconnecting browser would be a line.
            gate.rejected["shutting down"] += 1
            return ws.reject(503, "relay is shutting down; connect to another node\n")
        if refusal is not None:
            gate.refused("connection limit", address, refusal)
            return ws.reject(503, f"relay cannot take this connection: {refusal}\n")
        return ws.accept(request)


def _asks_to_upgrade(request: Request) -> bool:
    """Whether ``request`` asks for a WebSocket, not plain HTTP."""
    upgrade = ", ".join(request.headers.get_all("Upgrade"))  # .get() raises on two
    return "websocket" in upgrade.lower()
