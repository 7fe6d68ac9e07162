"""relay's frame-level WebSocket against websockets' own ``ServerProtocol``, byte for byte.

For any stream a browser may send (well-formed frames, broken ones, garbage,
cut anywhere into reads), ``ServerFrames`` must find the same frames, write
the same bytes (pongs, close frames, the half-close), fail with the same
close code and reason, and end in the same state as websockets' protocol
does once its handshake is done.
"""

from __future__ import annotations

import itertools
import logging
import struct
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from relay.core.websocket import SEND_EOF, ServerFrames, parse_frame

T = TypeVar("T")

#: Small, so that messages over the limit are common.
MAX_SIZE = 64
#: websockets' logger, kept quiet: a failing stream is logged at DEBUG only anyway.
_LOG = logging.getLogger("tests.websocket")


def frame_bytes(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bytes | None = b"abcd"
) -> bytes:
    """One client frame as sent on the wire (masked unless ``mask`` is None)."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    masked = 0x80 if mask is not None else 0
    length = len(payload)
    if length < 126:
        head += bytes([masked | length])
    elif length < 1 << 16:
        head += bytes([masked | 126]) + struct.pack("!H", length)
    else:
        head += bytes([masked | 127]) + struct.pack("!Q", length)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def weighted(common: list[T], rare: list[T], weight: int = 10) -> st.SearchStrategy[T]:
    """One of ``common`` (each ``weight`` times as likely), or now and then one of ``rare``."""
    return st.sampled_from(common * weight + rare)


close_payloads = st.one_of(
    st.just(b""),
    st.binary(max_size=1),  # too short for a code
    st.builds(
        lambda code, reason: struct.pack("!H", code) + reason,
        weighted([1000, 1001, 3000, 4999], [1002, 1005, 1006, 1011, 1015, 999, 2999, 5000], 3),
        weighted([b"", b"bye", "déjà".encode()], [b"\xff\xfe"], 3),
    ),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """A frame a browser, or something posing as one, may send: mostly well-formed."""
    opcode = draw(weighted([0x0, 0x1, 0x1, 0x2, 0x8, 0x9, 0xA], [0x3, 0xB], 4))
    if opcode == 0x8:
        payload = draw(close_payloads)
    elif draw(weighted([True], [False], 8)):
        payload = draw(st.binary(max_size=30))
    else:
        payload = draw(st.sampled_from([b"y" * 70, b"x" * 126, b"z" * 300]))
    control = opcode >= 0x8
    fin = draw(weighted([True], [False], 8)) if control else draw(st.booleans())
    rsv = draw(weighted([0], [1, 2, 4], 20))
    mask = draw(weighted([b"abcd", b"\x00\x00\x00\x00"], [None], 15))
    return frame_bytes(opcode, payload, fin=fin, rsv=rsv, mask=mask)


streams = st.lists(
    st.one_of(frames(), frames(), frames(), frames(), frames(), st.binary(max_size=6)), max_size=10
).map(b"".join)


def cuts(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at ``points`` (taken modulo its length) into reads."""
    if not data:
        return []
    at = sorted({p % len(data) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(at)]


def summary(frame: Frame) -> tuple[Opcode, bytes, bool, bool, bool, bool]:
    """What a frame is, for comparing two parsers' results."""
    return (frame.opcode, bytes(frame.data), frame.fin, frame.rsv1, frame.rsv2, frame.rsv3)


def theirs(reads: list[bytes], eof: bool) -> tuple[list[object], list[bytes], State, bool]:
    """The protocol of websockets, opened and fed ``reads``: frames, writes, state, EOF sent."""
    protocol = ServerProtocol(max_size=MAX_SIZE, state=State.OPEN, logger=_LOG)
    found: list[object] = []
    written: list[bytes] = []
    for data in reads:
        protocol.receive_data(data)
        found += [summary(e) for e in protocol.events_received() if isinstance(e, Frame)]
        written += protocol.data_to_send()
    if eof:
        protocol.receive_eof()
        written += protocol.data_to_send()
    return found, written, protocol.state, protocol.eof_sent


def ours(reads: list[bytes], eof: bool) -> tuple[list[object], list[bytes], State, bool]:
    """The same with ``ServerFrames``."""
    protocol = ServerFrames()
    found: list[object] = []
    written: list[bytes] = []
    for data in reads:
        found += [summary(frame) for frame in protocol.receive_data(data, MAX_SIZE)]
        written += protocol.data_to_send()
    if eof:
        protocol.receive_eof()
        written += protocol.data_to_send()
    return found, written, protocol.state, protocol.eof_sent


@settings(max_examples=1500, deadline=None)
@given(stream=streams, points=st.lists(st.integers(min_value=0), max_size=6), eof=st.booleans())
def test_reads_any_stream_as_websockets_does(stream: bytes, points: list[int], eof: bool) -> None:
    reads = cuts(stream, points)
    assert ours(reads, eof) == theirs(reads, eof)


def test_an_idle_connection_keeps_no_buffer_and_nothing_to_send() -> None:
    protocol = ServerFrames()
    found = protocol.receive_data(frame_bytes(0x1, b'{"command":"ping"}'), MAX_SIZE)
    assert [frame.data for frame in found] == [b'{"command":"ping"}']
    assert protocol.unparsed == b""
    assert protocol.data_to_send() == []
    assert protocol.state is State.OPEN


def test_part_of_a_frame_is_kept_until_the_rest_arrives() -> None:
    whole = frame_bytes(0x1, b"hello")
    protocol = ServerFrames()
    assert protocol.receive_data(whole[:4], MAX_SIZE) == []
    assert protocol.unparsed == whole[:4]
    assert [frame.data for frame in protocol.receive_data(whole[4:], MAX_SIZE)] == [b"hello"]
    assert protocol.unparsed == b""


def test_a_resumed_message_counts_the_fragments_it_had_against_the_limit() -> None:
    protocol = ServerFrames(message_size=MAX_SIZE - 2)
    protocol.receive_data(frame_bytes(0x0, b"abc"), MAX_SIZE)
    writes = protocol.data_to_send()
    assert (writes[0][0], writes[0][2:4]) == (0x88, b"\x03\xf1")  # close 1009: too big
    assert writes[-1] == SEND_EOF


def test_parse_frame_says_where_a_frame_ends() -> None:
    data = b"junk" + frame_bytes(0x9, b"hi") + b"\x81"
    parsed = parse_frame(data, 4, MAX_SIZE)
    assert parsed is not None
    frame, end = parsed
    assert (frame.opcode, frame.data) == (Opcode.PING, b"hi")
    assert parse_frame(data, end, MAX_SIZE) is None
