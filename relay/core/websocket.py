"""An open server-side WebSocket, frame by frame, keeping nothing between frames.

websockets' ``ServerProtocol`` does the opening handshake; once it answered
101, a browser connection swaps it for a :class:`ServerFrames`, which follows
the same rules for the rest of the connection's life (RFC 6455 as websockets
reads it: masking, sizes, fragment order, control frames, the closing
handshake) but holds no parser generator, no stream buffer, no request and
no response: an idle browser costs a handful of slots. Each complete frame is
parsed by websockets' own ``Frame.parse`` over the bytes at hand; the bytes of
a frame not complete yet are all that is kept, and usually there are none.

Pure: no I/O; the caller writes what ``data_to_send`` returns.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

from websockets.exceptions import InvalidState, PayloadTooBig, ProtocolError
from websockets.extensions import Extension
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import State

#: What ``data_to_send`` returns to ask for a half-close (as websockets' ``SEND_EOF``).
SEND_EOF = b""


class _Incomplete(Exception):
    """The bytes at hand end inside a frame."""


class _Cursor:
    """Serves ``Frame.parse``'s reads from one bytes object, raising at its end."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def read_exact(self, n: int) -> Generator[None, None, bytes]:
        """The next ``n`` bytes; raises ``_Incomplete`` when fewer are left."""
        end = self.pos + n
        if end > len(self.data):
            raise _Incomplete
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk
        yield  # a generator, as Frame.parse expects: it never suspends


def parse_frame(
    data: bytes, pos: int, max_size: int | None, extensions: Sequence[Extension] = ()
) -> tuple[Frame, int] | None:
    """The client frame starting at ``data[pos]`` and where it ends, or None if it is cut short.

    Raises what websockets' ``Frame.parse`` raises (``ProtocolError``,
    ``PayloadTooBig``, ``UnicodeDecodeError`` from an extension...), as soon
    as the bytes that show the fault are there.
    """
    cursor = _Cursor(data, pos)
    parser = Frame.parse(cursor.read_exact, mask=True, max_size=max_size, extensions=extensions)
    try:
        next(parser)
    except StopIteration as done:
        return done.value, cursor.pos
    except _Incomplete:
        return None
    raise AssertionError("Frame.parse suspended")  # pragma: no cover - read_exact never yields


class ServerFrames:
    """The server's side of an open WebSocket connection, after the handshake.

    Mirrors what relay used of websockets' ``ServerProtocol``: ``state``,
    ``eof_sent``, ``receive_data``, ``receive_eof``, ``send_ping``,
    ``send_close``, ``fail``, ``data_to_send`` and ``close_expected``.
    ``receive_data`` returns the frames, data and control, that
    ``events_received`` would have; pings are answered by itself.
    """

    __slots__ = ("_extensions", "_message_size", "_out", "_tail", "eof_sent", "state")

    def __init__(
        self,
        extensions: Sequence[Extension] = (),
        *,
        message_size: int | None = None,
    ) -> None:
        """Start open, with the extensions the handshake agreed on.

        ``message_size`` resumes a connection (handed over from another
        process) in the middle of a fragmented message: the bytes of the
        fragments it received so far.
        """
        self.state = State.OPEN
        self.eof_sent = False
        # A shared empty tuple when there are none: most connections negotiate none.
        self._extensions: Sequence[Extension] = tuple(extensions) if extensions else ()
        #: Bytes of the message being received in fragments, None between messages.
        self._message_size = message_size
        #: Bytes received past the last complete frame.
        self._tail = b""
        #: What to write, until ``data_to_send`` takes it (None rather than an empty list).
        self._out: list[bytes] | None = None

    @property
    def extensions(self) -> Sequence[Extension]:
        """The extensions agreed on in the handshake (permessage-deflate, if any)."""
        return self._extensions

    @property
    def unparsed(self) -> bytes:
        """Bytes received past the last complete frame (part of a frame, usually none)."""
        return self._tail

    @property
    def in_message(self) -> bool:
        """Whether a fragmented message was begun and not finished."""
        return self._message_size is not None

    def receive_data(self, data: bytes, max_size: int | None) -> list[Frame]:
        """Parse ``data``; return the frames it completes.

        A message over ``max_size`` bytes fails the connection (1009), as does
        a frame breaking the protocol (1002) or a close reason that is not
        UTF-8 (1007). Once a close frame arrived or the connection failed,
        what follows is discarded.
        """
        if self.eof_sent:
            return []
        buffer = self._tail + data if self._tail else data
        frames: list[Frame] = []
        pos = 0
        try:
            while not self.eof_sent:
                limit = max_size
                if limit is not None and self._message_size is not None:
                    limit -= self._message_size
                parsed = parse_frame(buffer, pos, limit, self._extensions)
                if parsed is None:
                    break
                frame, pos = parsed
                self._receive_frame(frame)
                frames.append(frame)
        except ProtocolError as exc:
            self.fail(CloseCode.PROTOCOL_ERROR, str(exc))
        except UnicodeDecodeError as exc:
            self.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
        except PayloadTooBig as exc:
            exc.set_current_size(self._message_size)
            self.fail(CloseCode.MESSAGE_TOO_BIG, str(exc))
        self._tail = b"" if self.eof_sent or pos >= len(buffer) else buffer[pos:]
        return frames

    def receive_eof(self) -> None:
        """The browser closed its side: the connection is closed; idempotent."""
        # Mid-message or not, websockets ends up here too: it half-closes if
        # it had not, sends no close frame (1006 is never sent), and is closed.
        if not self.eof_sent:
            self._send_eof()
        self.state = State.CLOSED
        self._tail = b""

    def send_text(self, data: bytes) -> None:
        """Queue a whole text message, compressed if the extensions say so (echo servers)."""
        self._send(Frame(Opcode.TEXT, data))

    def send_binary(self, data: bytes) -> None:
        """Queue a whole binary message, compressed if the extensions say so (echo servers)."""
        self._send(Frame(Opcode.BINARY, data))

    def send_ping(self, data: bytes) -> None:
        """Queue a ping (only while open or closing)."""
        if self.state is State.OPEN or self.state is State.CLOSING:
            self._send(Frame(Opcode.PING, data))

    def send_close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake with ``code``; the connection is closing after this.

        Raises:
            websockets.exceptions.InvalidState: the connection is not open.
        """
        if self.state is not State.OPEN:
            raise InvalidState(f"connection is {self.state.name.lower()}")
        self._send(Frame(Opcode.CLOSE, Close(code, reason).serialize()))
        self.state = State.CLOSING

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection: a close frame with ``code`` (when open), half-close, discard."""
        if self.state is State.OPEN and code != CloseCode.ABNORMAL_CLOSURE:
            self._send(Frame(Opcode.CLOSE, Close(code, reason).serialize()))
            self.state = State.CLOSING
        if not self.eof_sent:
            self._send_eof()
        self._tail = b""

    def data_to_send(self) -> list[bytes]:
        """What to write, in order; ``SEND_EOF`` asks for a half-close."""
        out, self._out = self._out, None
        return out or []

    def close_expected(self) -> bool:
        """Whether the TCP connection should close soon (a close frame was sent)."""
        return self.state is State.CLOSING

    def _receive_frame(self, frame: Frame) -> None:
        """Apply one frame to the connection's state, as websockets' ``recv_frame`` does."""
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if self._message_size is not None:
                raise ProtocolError("expected a continuation frame")
            if not frame.fin:
                self._message_size = len(frame.data)
        elif opcode is Opcode.CONT:
            if self._message_size is None:
                raise ProtocolError("unexpected continuation frame")
            self._message_size = None if frame.fin else self._message_size + len(frame.data)
        elif opcode is Opcode.PING:
            self._send(Frame(Opcode.PONG, frame.data))
        elif opcode is Opcode.CLOSE:
            Close.parse(frame.data)  # raises on a bad code or reason, as websockets does
            if self._message_size is not None:
                raise ProtocolError("incomplete fragmented message")
            if self.state is State.OPEN:
                # The browser's own bytes are echoed, as websockets does: an empty
                # close frame stands for 1005, which may not be sent.
                self._send(Frame(Opcode.CLOSE, frame.data))
                self.state = State.CLOSING
            # A server closes the TCP connection as soon as the closing handshake is done.
            self._send_eof()

    def _send(self, frame: Frame) -> None:
        data = frame.serialize(mask=False, extensions=self._extensions)
        if self._out is None:
            self._out = [data]
        else:
            self._out.append(data)

    def _send_eof(self) -> None:
        self.eof_sent = True
        if self._out is None:
            self._out = [SEND_EOF]
        else:
            self._out.append(SEND_EOF)
