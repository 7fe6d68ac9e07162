"""One browser connection: a sans-I/O WebSocket driven by asyncio callbacks.

Each connection is one small object with no task of its own: bytes arrive in
``data_received``, go through websockets' ``ServerProtocol`` for the
handshake, then through the leaner ``relay.core.websocket.ServerFrames``
(which keeps no parser state between frames), and become commands for the
hub; messages leave through ``deliver``, which queues a frame built once for
every recipient, never awaiting; the listener's coalescer writes each
connection's queue in one write, on the next turn of the loop.

Limits enforced here: the handshake deadline, admission (503 over the
connection caps), the outbound buffer bound (a browser that stops reading is
reset instead of growing memory), and liveness (a silent browser is pinged,
then dropped; the listener's sweep calls ``check_liveness``). A browser
dropped with data it has not read (too slow, silent, or not finishing its
close) gets a TCP reset, so that the kernel frees what it still holds for it
at once instead of keeping it queued in FIN-WAIT-1 for minutes.

What the transport could not send at once (the browser reads slower than
relay writes) stays known here (``unsent``): a handoff or a restart passes
those bytes on with the connection, and the next process writes them first.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from websockets.extensions.base import ServerExtensionFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Origin

from relay.config import LimitsConfig
from relay.core.admission import Admission
from relay.core.coalescer import Coalescer
from relay.core.commands import (
    PONG,
    Ping,
    Replay,
    Subscribe,
    Unsubscribe,
    parse_command,
)
from relay.core.encoded import EncodedMessage
from relay.core.hub import Hub
from relay.core.instances import DEFAULT_INSTANCE, instance_from_path
from relay.core.websocket import ServerFrames
from relay.errors import CommandError
from relay.listeners.handshake import Gate, Handshake

log = logging.getLogger("relay.browser")
# websockets logs every open and close at INFO; relay keeps those at DEBUG.
_ws_log = logging.getLogger("relay.browser.websocket")

#: How long a closing connection may take to finish its closing handshake.
CLOSE_TIMEOUT = 5.0
#: SO_LINGER on with a zero timeout: close() sends a reset and discards the send queue.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)

_PONG = EncodedMessage(PONG)


class ConnectionContext(Gate, Protocol):
    """What a browser connection reads and calls on the listener that accepted it.

    The listener's current settings are read at each use, so a reload applies
    to open connections at once.
    """

    hub: Hub
    limits: LimitsConfig
    admission: Admission
    coalescer: Coalescer
    origins: Sequence[Origin | None] | None
    extensions: Sequence[ServerExtensionFactory] | None

    def track(self, connection: BrowserConnection) -> None:
        """Called by a connection once its socket is accepted."""

    def line_due(self, kind: str) -> int:
        """How many browsers' problems of ``kind`` a line would report now; 0: stay quiet."""

    def untrack(self, connection: BrowserConnection) -> None:
        """Called by a connection once its socket is closed."""


class BrowserConnection(asyncio.Protocol):
    """One browser's WebSocket connection, from handshake to close."""

    __slots__ = (
        "_address",
        "_admitted",
        "_closing",
        "_complained",
        "_counted",
        "_fragments",
        "_handshake",
        "_last_heard",
        "_last_write",
        "_listener",
        "_open",
        "_pinged",
        "_queued",
        "_refusal",
        "_timer",
        "_transport",
        "_unsent",
        "_unsent_bytes",
        "_ws",
        "instance",
    )

    def __init__(self, listener: ConnectionContext) -> None:
        """Create the protocol for one socket accepted by ``listener``."""
        self._listener = listener
        #: websockets' protocol until the handshake is answered; then, if it
        #: was accepted, the frame-level one alone (``_ws``).
        self._handshake: Handshake | None = Handshake(
            listener.origins, listener.extensions, listener.limits.browser_message_bytes, _ws_log
        )
        self._ws: ServerFrames | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._open = self._counted = self._admitted = False
        self._refusal: str | None = None
        self._closing = False
        self._complained = False
        self._pinged = False
        self._last_heard = time.monotonic()
        self._fragments: bytearray | None = None
        #: Frames waiting for the coalescer's next flush, and when this connection
        #: was last written to (monotonic seconds).
        self._queued: bytes | list[bytes] | None = None
        self._last_write = float("-inf")
        #: The last chunks written, of which the transport has not sent a tail yet
        #: (None: it had sent everything at the last write), and their length.
        self._unsent: collections.deque[bytes] | None = None
        self._unsent_bytes = 0
        self._address = "?"
        self.instance = DEFAULT_INSTANCE

    def _context(self) -> dict[str, str]:
        """Fields that JSON log lines carry for this connection."""
        return {"client": self._address, "instance": self.instance}

    # asyncio callbacks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the connection (or mark it for refusal) and start the handshake deadline."""
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        if peername:
            # One string per address, not per connection: tabs of a user, or of an
            # office behind one NAT, share theirs.
            self._address = sys.intern(str(peername[0]))
        admission = self._listener.admission
        self._refusal = admission.admit(self._address)
        self._admitted = self._refusal is None
        refused = self._refusal is not None and self._handshake is not None
        if refused and not admission.hold_refusal():
            # Waiting to say 503 would hold a descriptor: past the bound, say nothing.
            self._listener.refused(
                "connection limit",
                self._address,
                f"{self._refusal}; closed unanswered: too many refused connections wait",
            )
            self._refusal = None
            self._transport.abort()
            return
        limits = self._listener.limits
        # pause_writing() fires when this much is queued: the browser is not reading.
        self._transport.set_write_buffer_limits(high=limits.outbound_buffer_bytes)
        sock = transport.get_extra_info("socket")
        if limits.socket_send_buffer_bytes and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limits.socket_send_buffer_bytes)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(limits.handshake_seconds, self._handshake_expired)
        self._listener.track(self)

    def data_received(self, data: bytes) -> None:
        """Feed bytes to the parser and act on what it found."""
        self._last_heard = time.monotonic()
        self._pinged = False
        if self._ws is None:
            assert self._handshake is not None
            # What follows the request head is read once the handshake is accepted.
            requests, data = self._handshake.receive(data)
            for request in requests:
                self._on_request(request)
            if not requests and (reply := self._handshake.refusal(self._listener, self._address)):
                self._send(reply)  # before websockets' end
        ws = self._ws
        if ws is not None and data:
            for frame in ws.receive_data(data, self._listener.limits.browser_message_bytes):
                if self._open:
                    self._on_frame(frame)
        self._flush()

    def eof_received(self) -> bool | None:
        """The browser half-closed; let the transport close."""
        self._protocol().receive_eof()
        self._flush()
        return None

    def pause_writing(self) -> None:
        """The outbound buffer passed its bound: this browser is not keeping up."""
        if self._open:
            self._open = False  # deliver nothing more
            asyncio.get_running_loop().call_soon(self._close_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the browser and its subscriptions; give back its admission slot."""
        self._protocol().receive_eof()
        self._cancel_timer()
        if self._counted:
            self._listener.hub.disconnect(self)
        if self._admitted:
            self._listener.admission.release(self._address)
        elif self._refusal is not None and self._handshake is not None:
            # Refused, and held a slot to wait for its request (never answered 101).
            self._listener.admission.drop_refusal()
        self._open = self._counted = self._admitted = False
        self._listener.untrack(self)
        log.debug("browser %s disconnected", self._address)

    # What the hub and the listener call.

    def deliver(self, message: EncodedMessage) -> None:
        """Queue an encoded message; the coalescer's next flush writes it with any others.

        No-op once the connection is closing.
        """
        if not self._open:
            return
        queued = self._queued
        if queued is None:
            # A lone frame is kept as is: no list for the garbage collector to track.
            self._queued = message.frame
            self._listener.coalescer.mark(self, self._last_write)
        elif type(queued) is list:  # a quarter of isinstance()'s cost, once per delivery
            queued.append(message.frame)
        else:
            self._queued = [cast(bytes, queued), message.frame]

    def write_queued(self, now: float) -> None:
        """Write the frames queued since the last write, in one write (the coalescer calls this)."""
        queued, self._queued = self._queued, None
        if queued and self._open:
            transport = self._transport
            assert transport is not None
            self._last_write = now
            data = queued if isinstance(queued, bytes) else b"".join(queued)
            # _send, inlined: this is once per browser per flush.
            transport.write(data)
            if unsent := transport.get_write_buffer_size():
                self._keep_unsent(data, unsent)
            elif self._unsent is not None:
                self._unsent = None

    def unsent(self) -> bytes | None:
        """What relay wrote that the transport has not sent yet (whole frames but maybe the first).

        Empty when it has sent everything; None when that cannot be told (no transport).
        """
        transport = self._transport
        if transport is None:
            return None
        size = transport.get_write_buffer_size()
        if not size:
            return b""
        if self._unsent is None or self._unsent_bytes < size:
            return None  # not all written through _send: cannot happen
        return b"".join(self._unsent)[-size:]

    def check_liveness(self, now: float) -> None:
        """Ping a browser silent for the ping interval; drop one silent past the timeout."""
        if not self._open:
            return
        silent = now - self._last_heard
        limits = self._listener.limits
        if silent >= limits.ping_interval_seconds + limits.ping_timeout_seconds:
            self._listener.rejected["ping timeout"] += 1
            if count := self._listener.line_due("ping timeout"):
                log.info(
                    "browser %s did not answer a ping in time; dropped%s",
                    self._address,
                    _since(count),
                )
            self.reset()
        elif silent >= limits.ping_interval_seconds and not self._pinged:
            self._pinged = True
            assert self._ws is not None  # open
            self._ws.send_ping(b"relay")
            self._flush()

    def going_away(self) -> None:
        """Close with 1001 so the browser reconnects, to this node later or another one now.

        No-op for a connection that is already closing.
        """
        if self._transport is None or self._transport.is_closing() or self._closing:
            return
        if self._ws is not None and self._ws.state is State.OPEN:
            self._ws.send_close(1001, "server shutting down")
            self._flush()
        else:
            self.abort()

    def bound_outbound(self, limit: int) -> None:
        """Apply a reloaded ``limits.outbound_buffer_bytes`` to this open connection.

        A browser with more than ``limit`` queued now is reset, as it would be
        on its next write (``pause_writing``).
        """
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.set_write_buffer_limits(high=limit)

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake."""
        if self._transport is not None:
            self._transport.abort()

    def reset(self) -> None:
        """Drop a connection that may have unread data queued, with a TCP reset.

        A plain close would leave whatever the browser has not read in the
        kernel's send queue (FIN-WAIT-1) until it reads it or TCP gives up,
        minutes later; the reset frees it now, and the browser learns at once.
        """
        transport = self._transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Gone already (the peer reset first): nothing is queued to free.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        transport.abort()

    # Handshake.

    def _protocol(self) -> ServerProtocol | ServerFrames:
        """The protocol reading and writing now: websockets' in the handshake, then ours."""
        if self._ws is not None:
            return self._ws
        assert self._handshake is not None
        return self._handshake.protocol

    def _on_request(self, request: Request) -> None:
        handshake = self._handshake
        assert handshake is not None
        ws = handshake.protocol
        if ws.eof_sent:
            return  # refused already (a request line too long...)
        response = handshake.answer(request, self._listener, self._address, self._refusal)
        ws.send_response(response)
        self._flush()  # before anything a frame sent along with the request makes us write
        if response.status_code == 101:
            # From here on websockets' protocol, its parser and the request are not kept.
            self._ws = ServerFrames(ws.extensions)
            self._handshake = None
            self._cancel_timer()
            self.instance = instance_from_path(request.path)
            self._open = self._counted = True
            self._listener.hub.connect(self)
            log.debug("browser %s connected to instance %s", self._address, self.instance)
        elif response.status_code == 403:
            self._listener.refused("origin", self._address, str(ws.handshake_exc))

    def _handshake_expired(self) -> None:
        self._timer = None
        self._listener.rejected["handshake timeout"] += 1
        log.debug("browser %s did not finish its handshake in time", self._address)
        self.abort()

    # Frames and commands.

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT:
            if frame.fin:
                self._on_text(frame.data)
            else:
                self._fragments = bytearray(frame.data)
        elif opcode is Opcode.CONT and self._fragments is not None:
            self._fragments += frame.data
            if frame.fin:
                data, self._fragments = self._fragments, None
                self._on_text(data)
        elif opcode is Opcode.BINARY:
            self._complain("binary frame", "sent a binary frame; relay only reads text, ignored")

    def _on_text(self, data: bytes | bytearray | memoryview) -> None:
        try:
            text = str(data, "utf-8")
        except UnicodeDecodeError:
            assert self._ws is not None  # open
            self._ws.fail(1007, "invalid UTF-8 in a text frame")
            return
        try:
            command = parse_command(text)
        except CommandError as exc:
            self._complain("unusable frame", f"sent an unusable frame, ignored: {exc}")
            return
        try:
            self._run(command)
        except Exception:
            # A bug met by one connection's input ends that connection only.
            log.exception("handling a command from browser %s failed", self._address)
            assert self._ws is not None  # open
            self._ws.fail(1011, "internal error")

    def _run(self, command: Subscribe | Unsubscribe | Replay | Ping) -> None:
        hub = self._listener.hub
        if isinstance(command, Subscribe):
            refused = hub.subscribe(self, command.keys)
            if refused:
                limits = self._listener.limits
                self._complain(
                    "too many keys",
                    f"subscribed to too much: refused {refused} keys (longer than "
                    f"{limits.max_key_length} characters or past {limits.max_subscriptions} "
                    "subscriptions)",
                )
        elif isinstance(command, Unsubscribe):
            hub.unsubscribe(self, command.keys)
        elif isinstance(command, Replay):
            hub.replay(self, command.age_ms)
            # Written now: many replays in one read meet the outbound bound one by one.
            self._flush()
        else:
            self.deliver(_PONG)

    def _complain(self, kind: str, problem: str) -> None:
        """Log a problem with what this browser sent: the first at INFO, the rest at DEBUG.

        One connection must not be able to fill the disk with log lines, nor
        many connections sending one bad frame each: a connection's first
        problem is written at INFO only when the listener has written no line
        of its ``kind`` lately (``line_due``), and that line counts the others.
        """
        count = 0 if self._complained else self._listener.line_due(kind)
        self._complained = True
        if count:
            others = f"; {_others(count)}" if count > 1 else ""
            log.info(
                "browser %s %s (more from this browser are logged at DEBUG only%s)",
                self._address,
                problem,
                others,
                extra=self._context(),
            )
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("browser %s %s", self._address, problem, extra=self._context())

    # Writing and closing.

    def _close_too_slow(self) -> None:
        """Reset a browser whose outbound buffer passed its bound, freeing both buffers at once.

        A close frame would only queue behind the megabyte it is not reading.
        """
        self._listener.rejected["too slow"] += 1
        if count := self._listener.line_due("too slow"):
            log.warning(
                "browser %s stopped reading; over %d bytes queued, connection reset%s",
                self._address,
                self._listener.limits.outbound_buffer_bytes,
                _since(count),
                extra=self._context(),
            )
        self._cancel_timer()
        self.reset()

    def _flush(self) -> None:
        """Write what the protocol produced; start the close deadline when closing."""
        ws = self._protocol()
        transport = self._transport
        assert transport is not None
        if self._queued:
            # Queued messages go before a pong, a ping or a close frame.
            self.write_queued(self._listener.coalescer.clock())
        for data in ws.data_to_send():
            if data:
                self._send(data)
            elif transport.can_write_eof():
                # Half-close, so the browser reads our close frame before the TCP close.
                try:
                    transport.write_eof()
                except (OSError, RuntimeError):
                    transport.close()
            else:
                transport.close()
        if ws.state is not State.OPEN:
            # Only a completed handshake opens; closing, failing or pause_writing close.
            self._open = False
        if not self._closing and ws.close_expected():
            self._closing = True
            self._open = False
            self._cancel_timer()
            self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.reset)

    def _send(self, data: bytes) -> None:
        """Write ``data``; remember what the transport could not send at once (``unsent``).

        Every write goes through here. The cost on the usual path, where the
        kernel takes it all: one ``get_write_buffer_size()`` and a test.
        """
        transport = self._transport
        assert transport is not None
        transport.write(data)
        if unsent := transport.get_write_buffer_size():
            self._keep_unsent(data, unsent)
        elif self._unsent is not None:
            self._unsent = None

    def _keep_unsent(self, data: bytes, unsent: int) -> None:
        """Keep the chunks that hold the ``unsent`` bytes, ``data`` (just written) the last."""
        chunks = self._unsent
        if chunks is None or unsent <= len(data):
            self._unsent = collections.deque((data,))
            self._unsent_bytes = len(data)
            return
        chunks.append(data)
        self._unsent_bytes += len(data)
        # Chunks sent whole are not needed any more: the transport sends in order.
        while self._unsent_bytes - len(chunks[0]) >= unsent:
            self._unsent_bytes -= len(chunks.popleft())

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _since(count: int) -> str:
    """The end of a bounded line standing for ``count`` browsers (``line_due``)."""
    return f" ({_others(count)})" if count > 1 else ""


def _others(count: int) -> str:
    """The browsers a bounded line stands for besides its own (``count`` in all, above 1)."""
    return f"{count - 1} more browsers since the last such line"


#: Builds the protocol for one accepted socket: ``BrowserConnection`` or a subclass.
ConnectionFactory = Callable[[ConnectionContext], BrowserConnection]
