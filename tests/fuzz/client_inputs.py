"""Hostile WebSocket sessions for the client port, from a seeded generator.

Odd handshakes (headers missing, doubled or wrong, other methods and
versions, strange paths), then frames: commands with invalid JSON, wrong
types, huge or deeply nested values, binary frames, invalid UTF-8, broken
fragmentation, control frames out of bounds, reserved bits and opcodes,
unmasked frames, frames cut short, and traffic after the close frame.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from urllib.parse import quote

from tests.fuzz import junk
from tests.fuzz.admin_inputs import KEYS
from tests.fuzz.cases import Case, Ending
from tests.fuzz.wire import BINARY, CLOSE, CONT, PING, PONG, TEXT, close_payload, frame, request


def _path(rng: random.Random) -> bytes:
    pick = rng.random()
    if pick < 0.4:
        return b"/"
    if pick < 0.7:
        return b"/~" + quote(junk.instance(rng), safe="").encode() + b"/"
    return rng.choice(
        (
            b"/notifications/~acme/",
            b"/~a~b~c",
            b"/?~x",
            b"/~%ff/",
            b"/~\xff\xfe/",
            b"/~" + b"i" * 5000,
            b"*",
            b"http://relay/~acme/",
            b"",
            b"~acme",
        )
    )


def handshake(rng: random.Random) -> tuple[bytes, str]:
    """An opening handshake, usually valid, and what was odd about it."""
    key = base64.b64encode(rng.randbytes(16))
    method, path, version = b"GET", _path(rng), b"HTTP/1.1"
    headers = [
        (b"Host", b"relay"),
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Key", key),
        (b"Sec-WebSocket-Version", b"13"),
    ]
    odd = "ok"
    if rng.random() < 0.35:
        odd = rng.choice(("drop", "double", "value", "extra", "method", "version", "plain"))
        if odd == "drop":
            del headers[rng.randrange(len(headers))]
        elif odd == "double":
            headers.append(rng.choice(headers[1:]))
        elif odd == "value":
            at = rng.randrange(1, len(headers))
            name = headers[at][0]
            headers[at] = (name, rng.choice((b"", b"abc", b"13, 8", b"8", b"\xff", b"x" * 300)))
        elif odd == "extra":
            headers.append(_extra_header(rng))
        elif odd == "method":
            method = rng.choice((b"POST", b"HEAD", b"OPTIONS", b"CONNECT", b"get"))
        elif odd == "version":
            version = rng.choice((b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2", b""))
        else:
            headers = [(b"Host", b"relay")]
    data = request(method, path, version, headers)
    if rng.random() < 0.05:
        odd, data = "mutated", junk.mutate(rng, data)
    return data, odd


def _extra_header(rng: random.Random) -> tuple[bytes, bytes]:
    return rng.choice(
        (
            (b"Origin", b"null"),
            (b"Origin", b"https://\xff"),
            (b"Origin", rng.choice(junk.HOSTS)),
            (b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits=99"),
            (b"Sec-WebSocket-Extensions", b"permessage-deflate; server_no_context_takeover=x"),
            (b"Sec-WebSocket-Extensions", b";;;,,"),
            (b"Sec-WebSocket-Protocol", b"chat, , \xff"),
            (b"Content-Length", b"5"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Host", rng.choice(junk.HOSTS)),
        )
    )


def command_text(rng: random.Random) -> bytes:
    """A command frame's text: right, wrong, huge or deep."""
    pick = rng.randrange(12)
    if pick < 3:
        command = rng.choice(("subscribe", "unsubscribe"))
        return junk.dumps({"command": command, "data": rng.sample(KEYS, rng.randint(1, 4))})
    if pick == 3:
        return junk.dumps({"command": "replay", "data": {"age": rng.choice((0, 60000, -1, 1e300))}})
    if pick == 4:
        return b'{"command":"ping"}'
    if pick == 5:
        return junk.dumps({"command": junk.value(rng), "data": junk.value(rng)})
    if pick == 6:
        keys = [junk.text(rng, rng.choice((5, 300))) for _ in range(rng.choice((10, 1001, 3000)))]
        return junk.dumps({"command": "subscribe", "data": keys})
    if pick == 7:
        return b'{"command":' + junk.nested(rng) + b',"data":[]}'
    if pick == 8:
        return b'{"command":"subscribe","data":' + junk.nested(rng, b'"K"') + b"}"
    if pick == 9:
        return junk.raw_json_text(rng)
    if pick == 10:
        return b'{"command":"subscribe","data":["' + b"k" * rng.choice((65_000, 65_536)) + b'"]}'
    return junk.mutate(rng, b'{"command":"subscribe","data":["PHID-FUZZ-0"]}')


def _command(rng: random.Random) -> list[bytes]:
    return [frame(TEXT, command_text(rng))]


def _binary(rng: random.Random) -> list[bytes]:
    return [frame(BINARY, rng.choice((b"", command_text(rng), rng.randbytes(100))))]


def _bad_utf8(rng: random.Random) -> list[bytes]:
    return [frame(TEXT, rng.choice((b"\xff", b'{"command":"\xed\xa0\x80"}', b"\xc3")))]


def _fragments(rng: random.Random) -> list[bytes]:
    text = command_text(rng)
    at = rng.randrange(len(text) + 1)
    pick = rng.randrange(5)
    if pick == 0:
        return [frame(TEXT, text[:at], fin=False), frame(CONT, text[at:])]
    if pick == 1:
        return [frame(TEXT, text[:at], fin=False), frame(PING, b"x"), frame(CONT, text[at:])]
    if pick == 2:
        return [frame(CONT, text)]
    if pick == 3:
        return [frame(TEXT, text[:at], fin=False), frame(TEXT, text[at:])]
    return [frame(TEXT, text[:at], fin=False)] + [frame(CONT, b"x", fin=False)] * 50


def _control(rng: random.Random) -> list[bytes]:
    pick = rng.randrange(6)
    if pick == 0:
        return [frame(PING, rng.randbytes(rng.choice((0, 1, 125))))]
    if pick == 1:
        return [frame(PING, rng.randbytes(126))]
    if pick == 2:
        return [frame(PONG, rng.randbytes(rng.randint(0, 10)))]
    if pick == 3:
        return [frame(PING, b"x", fin=False)]
    code = rng.choice((1000, 1001, 1002, 999, 1004, 1005, 1006, 1015, 1016, 2999, 3000, 4999, 5000))
    reason = rng.choice((b"", b"bye", b"\xff\xfe", b"r" * 123))
    return [frame(CLOSE, rng.choice((close_payload(code, reason), b"\x03")))]


def _frame_bits(rng: random.Random) -> list[bytes]:
    pick = rng.randrange(5)
    text = b'{"command":"ping"}'
    if pick == 0:
        return [frame(rng.choice((3, 4, 5, 6, 7, 0xB, 0xC, 0xF)), text)]
    if pick == 1:
        return [frame(TEXT, text, rsv=rng.randint(1, 7))]
    if pick == 2:
        return [frame(TEXT, text, masked=False)]
    if pick == 3:
        return [frame(TEXT, text, wide=True)]
    whole = frame(TEXT, command_text(rng))
    return [whole[: rng.randrange(1, len(whole))]]


def _oversized(rng: random.Random) -> list[bytes]:
    size = rng.choice((65_535, 65_536, 65_537, 70_000))
    return [frame(rng.choice((TEXT, BINARY)), b"a" * size)]


_KINDS: dict[str, tuple[int, Callable[[random.Random], list[bytes]]]] = {
    "command": (40, _command),
    "binary": (5, _binary),
    "bad-utf8": (4, _bad_utf8),
    "fragments": (8, _fragments),
    "control": (8, _control),
    "frame-bits": (8, _frame_bits),
    "oversized": (3, _oversized),
}


def client_case(rng: random.Random) -> Case:
    """One hostile WebSocket session on the client port."""
    data, odd = handshake(rng)
    chunks, kinds = [data], []
    names = list(_KINDS)
    weights = [weight for weight, _ in _KINDS.values()]
    for _ in range(rng.randint(0, 6)):
        kind = rng.choices(names, weights)[0]
        kinds.append(kind)
        chunks.extend(_KINDS[kind][1](rng))
    if rng.random() < 0.3:
        kinds.append("after-close")
        chunks.append(frame(CLOSE, close_payload(1000)))
        chunks.extend(_command(rng) + _control(rng))
    elif rng.random() < 0.5:
        chunks.append(frame(CLOSE, close_payload(1000)))
    ending: Ending = rng.choices(("half-close", "linger", "reset"), weights=(70, 15, 15))[0]
    note = f"client/{odd}/" + "+".join(sorted(set(kinds)) or ["no-frames"])
    return Case(port="client", note=note, chunks=chunks, ending=ending)
