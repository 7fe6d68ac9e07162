"""One browser connection: websockets' sans-I/O protocol driven by asyncio callbacks.

Each connection is one small object with no task of its own: bytes arrive in
``data_received``, go through websockets' parser, and become commands for the
hub; messages leave through ``deliver``, which writes a frame built once for
every recipient straight to the transport, never awaiting.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from relay.commands import (
    PONG,
    Ping,
    Replay,
    Subscribe,
    Unsubscribe,
    instance_from_path,
    parse_command,
)
from relay.encoded import EncodedMessage
from relay.errors import CommandError
from relay.notification import DEFAULT_INSTANCE

if TYPE_CHECKING:
    from relay.client_listener import ClientListener

log = logging.getLogger("relay.browser")
# websockets logs every open and close at INFO; relay keeps those at DEBUG.
_ws_log = logging.getLogger("relay.browser.websocket")

#: Aphlict's answer to a plain HTTP request: Phorge's setup check expects 501.
PLAIN_HTTP_STATUS = 501
PLAIN_HTTP_BODY = "HTTP/501 Use Websockets\n"

#: How long a closing connection may take to finish its closing handshake.
CLOSE_TIMEOUT = 5.0

_PONG = EncodedMessage(PONG)


class BrowserConnection(asyncio.Protocol):
    """One browser's WebSocket connection, from handshake to close."""

    __slots__ = (
        "_closing",
        "_counted",
        "_fragments",
        "_listener",
        "_open",
        "_timer",
        "_transport",
        "_ws",
        "instance",
        "peer",
    )

    def __init__(self, listener: ClientListener) -> None:
        """Create the protocol for one accepted socket of ``listener``."""
        self._listener = listener
        self._ws = ServerProtocol(max_size=listener.limits.browser_message_bytes, logger=_ws_log)
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._open = False
        self._counted = False
        self._closing = False
        self._fragments: bytearray | None = None
        self.instance = DEFAULT_INSTANCE
        self.peer = "?"

    # asyncio callbacks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the handshake deadline and register with the listener."""
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        if peername:
            self.peer = f"{peername[0]}:{peername[1]}"
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(
            self._listener.limits.handshake_seconds, self._handshake_expired
        )
        self._listener.track(self)

    def data_received(self, data: bytes) -> None:
        """Feed bytes to the parser and act on what it found."""
        ws = self._ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                self._on_frame(event)
            elif isinstance(event, Request):
                self._on_request(event)
        self._flush()

    def eof_received(self) -> bool | None:
        """The browser half-closed; let the transport close."""
        self._ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the browser and its subscriptions."""
        self._ws.receive_eof()
        self._cancel_timer()
        if self._counted:
            self._listener.hub.disconnect(self)
        self._open = False
        self._listener.untrack(self)
        log.debug("browser %s disconnected", self.peer)

    # What the hub and the listener call.

    def deliver(self, message: EncodedMessage) -> None:
        """Write an encoded message to the browser; no-op once the connection is closing."""
        if self._open:
            assert self._transport is not None
            self._transport.write(message.frame)

    def going_away(self) -> None:
        """Close with 1001 so the browser reconnects, to this node later or another one now."""
        if self._ws.state is State.OPEN:
            self._ws.send_close(1001, "server shutting down")
            self._flush()
        else:
            self.abort()

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake."""
        if self._transport is not None:
            self._transport.abort()

    # Handshake.

    def _on_request(self, request: Request) -> None:
        ws = self._ws
        upgrade = request.headers.get("Upgrade", "")
        if "websocket" not in upgrade.lower():
            response = ws.reject(PLAIN_HTTP_STATUS, PLAIN_HTTP_BODY)
        else:
            response = ws.accept(request)
        ws.send_response(response)
        if response.status_code == 101:
            self._cancel_timer()
            self.instance = instance_from_path(request.path)
            self._open = self._counted = True
            self._listener.hub.connect(self)
            log.debug("browser %s connected to instance %s", self.peer, self.instance)

    def _handshake_expired(self) -> None:
        self._timer = None
        log.debug("browser %s did not finish its handshake in time", self.peer)
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
            log.info("browser %s sent a binary frame; relay only reads text, ignored", self.peer)

    def _on_text(self, data: bytes | bytearray | memoryview) -> None:
        try:
            text = str(data, "utf-8")
        except UnicodeDecodeError:
            self._ws.fail(1007, "invalid UTF-8 in a text frame")
            return
        try:
            command = parse_command(text)
        except CommandError as exc:
            log.info("browser %s sent an unusable frame, ignored: %s", self.peer, exc)
            return
        hub = self._listener.hub
        if isinstance(command, Subscribe):
            hub.subscribe(self, command.keys)
        elif isinstance(command, Unsubscribe):
            hub.unsubscribe(self, command.keys)
        elif isinstance(command, Replay):
            hub.replay(self, command.age_ms)
        elif isinstance(command, Ping):
            self.deliver(_PONG)

    # Writing and closing.

    def _flush(self) -> None:
        """Write what the protocol produced; start the close deadline when closing."""
        ws = self._ws
        transport = self._transport
        assert transport is not None
        for data in ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                # Half-close, so the browser reads our close frame before the TCP close.
                try:
                    transport.write_eof()
                except (OSError, RuntimeError):
                    transport.close()
            else:
                transport.close()
        self._open = ws.state is State.OPEN
        if not self._closing and ws.close_expected():
            self._closing = True
            self._cancel_timer()
            self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
