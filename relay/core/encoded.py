"""A message encoded once for all its recipients: the WebSocket frame, and the JSON inside it."""

from __future__ import annotations

from websockets.frames import Frame, Opcode


class EncodedMessage:
    """The unmasked text ``frame`` a server sends, and a view of its JSON ``payload``.

    Server-to-browser frames are never masked, so one frame serves every
    browser: it is built here once and written to each transport as is.

    Only the frame is kept. orjson returns bytes that keep its whole growth
    buffer (4 KiB for a 200-byte message, 128 KiB for a 9 KiB one), which
    would multiply the memory of every retained message; the frame is a
    right-sized copy, and the payload a view into it.
    """

    __slots__ = ("_start", "frame")

    def __init__(self, payload: bytes) -> None:
        """Frame ``payload`` (UTF-8 JSON)."""
        self.frame = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
        self._start = len(self.frame) - len(payload)

    @property
    def payload(self) -> memoryview:
        """The JSON bytes, without copying them out of the frame."""
        return memoryview(self.frame)[self._start :]
