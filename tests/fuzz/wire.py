"""Bytes on the wire, built and read by hand: HTTP requests, WebSocket frames, answers.

Libraries refuse to send most of what the fuzzer sends (a frame without a
mask, a request line without a target), so requests and frames are put
together here byte by byte, and answers are read just far enough to judge
them: the status lines of HTTP answers and the close codes of close frames.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field

#: The start of every HTTP answer in what the node sent (100 Continue included).
_STATUS = re.compile(rb"(?:^|\r\n)HTTP/\d(?:\.\d)? (\d{3})[ \r]")

TEXT, BINARY, CLOSE, PING, PONG, CONT = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def request(
    method: bytes,
    target: bytes,
    version: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
) -> bytes:
    """One HTTP request as written: ``version`` empty leaves it off the request line."""
    line = method + b" " + target + (b" " + version if version else b"")
    head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return line + b"\r\n" + head + b"\r\n" + body


def chunked(body: bytes, sizes: list[int]) -> bytes:
    """``body`` in chunks of the given sizes (the rest in one more), then the last chunk."""
    out, at = [], 0
    for size in [*sizes, len(body)]:
        piece = body[at : at + size]
        at += len(piece)
        if piece:
            out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    return b"".join(out) + b"0\r\n\r\n"


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    wide: bool = False,
) -> bytes:
    """A client frame; ``wide`` writes the length in 64 bits whatever its size."""
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)
    mask_bit = 0x80 if masked else 0
    size = len(payload)
    if wide or size > 0xFFFF:
        length = bytes((mask_bit | 127,)) + struct.pack("!Q", size)
    elif size > 125:
        length = bytes((mask_bit | 126,)) + struct.pack("!H", size)
    else:
        length = bytes((mask_bit | size,))
    if not masked:
        return bytes((first,)) + length + payload
    key = os.urandom(4)
    body = (
        bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if size < 4096 else _mask(payload, key)
    )
    return bytes((first,)) + length + key + body


def _mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` masked with ``key`` (XOR as one big integer: quick for long payloads)."""
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(payload), "big")


def close_payload(code: int, reason: bytes = b"") -> bytes:
    """A close frame's payload: the code, then the reason."""
    return struct.pack("!H", code) + reason


@dataclass
class Answer:
    """What the node sent back on one connection, read as far as judging needs."""

    raw: bytes = b""
    #: The node closed its side (EOF or reset) before we stopped reading.
    closed: bool = False
    statuses: list[int] = field(default_factory=list)
    close_codes: list[int] = field(default_factory=list)

    @property
    def head(self) -> bytes:
        """The first answer's status line and headers."""
        return self.raw.split(b"\r\n\r\n", 1)[0]


def read_statuses(raw: bytes) -> list[int]:
    """Every HTTP status line's code in ``raw``."""
    return [int(code) for code in _STATUS.findall(raw)]


def read_close_codes(raw: bytes) -> list[int]:
    """The close codes of the server frames after a ``101`` answer in ``raw``."""
    head, found, rest = raw.partition(b"\r\n\r\n")
    if not found or not head.startswith(b"HTTP/1.1 101"):
        return []
    codes = []
    at = 0
    while len(rest) - at >= 2:
        opcode, size = rest[at] & 0xF, rest[at + 1] & 0x7F
        at += 2
        if size == 126:
            if len(rest) - at < 2:
                break
            size = struct.unpack_from("!H", rest, at)[0]
            at += 2
        elif size == 127:
            if len(rest) - at < 8:
                break
            size = struct.unpack_from("!Q", rest, at)[0]
            at += 8
        if len(rest) - at < size:
            break
        if opcode == CLOSE:
            codes.append(struct.unpack_from("!H", rest, at)[0] if size >= 2 else 1005)
        at += size
    return codes


def answer_complete(raw: bytes) -> bool:
    """Whether ``raw`` holds a whole HTTP answer with a ``Content-Length`` (past any 1xx)."""
    while True:
        head, found, rest = raw.partition(b"\r\n\r\n")
        if not found:
            return False
        if not re.match(rb"HTTP/\d(?:\.\d)? 1\d\d", head):
            break
        raw = rest
    match = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
    return match is not None and len(rest) >= int(match.group(1))
