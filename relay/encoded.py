"""A message encoded once for all its recipients: JSON bytes and the WebSocket frame."""

from __future__ import annotations

from websockets.frames import Frame, Opcode


class EncodedMessage:
    """JSON ``payload`` and the unmasked text ``frame`` a server sends it in.

    Server-to-browser frames are never masked, so one frame serves every
    browser: it is built here once and written to each transport as is.
    """

    __slots__ = ("frame", "payload")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.frame = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
