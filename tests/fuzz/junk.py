"""Seeded junk both ports get: JSON of the wrong shape, names, hosts, and broken bytes.

Every function takes the ``random.Random`` it draws from, so a seed replays
the same stream of inputs.
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import quote

import orjson

#: Nesting depths around every limit that matters: relay's own 128 for
#: notifications, orjson's 254 when writing and 1,024 when reading.
DEPTHS = (1, 2, 64, 127, 128, 129, 200, 253, 254, 255, 300, 1000, 1023, 1024, 1025, 3000)

#: Hosts that have broken a parser somewhere (the first five broke /dashboard/).
HOSTS = (
    b"h:abc",
    b"h:1:2",
    b"[::1]:99999",
    b"[::1]x",
    b"\xff",
    b"",
    b":",
    b":80",
    b"[",
    b"[]",
    b"[::1",
    b"::1",
    b"[::1]:",
    b"[fe80::1%eth0]:80",
    b"127.0.0.1:0",
    b"127.0.0.1:-1",
    b"127.0.0.1:65536",
    b"a..b",
    b"-a-.b",
    b"a b",
    b"a/b",
    b"a?b#c",
    b"user:pass@host",
    b"xn--",
    b"xn--zz",
    b"\xc3\xa9xample.com",
    b"\xe2\x80\xae.example",
    b"%00",
    b"a" * 300,
    b"a." * 130,
    b"relay",
    b"localhost:22281",
)


def text(rng: random.Random, longest: int = 40) -> str:
    """A string that may hold anything JSON can carry (control characters, emoji, RTL)."""
    alphabet = "abcXYZ019-_.~ /\\\"'<>&%+\n\t\x00\x7f\u00e9\u202e\u4e2d\U0001f600"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))


def value(rng: random.Random, depth: int = 3) -> Any:
    """A random JSON value, at most ``depth`` containers deep."""
    pick = rng.randrange(10 if depth > 0 else 7)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice((True, False))
    if pick == 2:
        return rng.choice((0, -1, 1, 2**31, 2**63 - 1, -(2**63), rng.randint(-9, 9**9)))
    if pick == 3:
        return rng.choice((0.5, -0.0, 1e308, -1e-308, 3.14))
    if pick in (4, 5, 6):
        return text(rng)
    if pick in (7, 8):
        return [value(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {text(rng, 8): value(rng, depth - 1) for _ in range(rng.randint(0, 4))}


def dumps(thing: Any) -> bytes:
    """``thing`` as JSON, whatever it holds."""
    return orjson.dumps(thing, option=orjson.OPT_NON_STR_KEYS)


def nested(rng: random.Random, inner: bytes = b"1") -> bytes:
    """JSON arrays or objects nested to one of ``DEPTHS`` levels around ``inner``."""
    depth = rng.choice(DEPTHS)
    if rng.random() < 0.5:
        return b"[" * depth + inner + b"]" * depth
    return b'{"a":' * depth + inner + b"}" * depth


def raw_json_text(rng: random.Random) -> bytes:
    """JSON text that no encoder writes: bad escapes, lone surrogates, numbers out of range."""
    return rng.choice(
        (
            b'"\\ud800"',
            b'"\\udc00\\ud800"',
            b'"\\u00"',
            b'"\\x41"',
            b'"\xff\xfe"',
            b'"\xed\xa0\x80"',
            b"1e400",
            b"-1e400",
            b"123456789012345678901234567890",
            b"NaN",
            b"Infinity",
            b"01",
            b"1.",
            b".5",
            b"+1",
            b"tru",
            b"nul",
            b'"unterminated',
            b"[1,]",
            b'{"a":1,}',
            b'{"a" 1}',
            b"\xef\xbb\xbf{}",
            b"{}garbage",
            b"{} {}",
            b"",
            b" ",
            b"\x00",
        )
    )


def mutate(rng: random.Random, data: bytes, times: int = 3) -> bytes:
    """``data`` with a few bytes flipped, dropped, inserted or repeated."""
    out = bytearray(data)
    for _ in range(rng.randint(1, times)):
        at = rng.randrange(len(out) + 1)
        action = rng.randrange(5)
        if action == 0 and at < len(out):
            out[at] ^= 1 << rng.randrange(8)
        elif action == 1 and at < len(out):
            del out[at : at + rng.randint(1, 8)]
        elif action == 2:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif action == 3:
            out[at:at] = rng.choice((b"\r\n", b"\n", b"\r", b"\x00", b" ", b":", b"%", b'"'))
        else:
            out[at:at] = out[at : at + rng.randint(1, 16)] * rng.randint(2, 8)
    return bytes(out)


def instance(rng: random.Random) -> str:
    """An instance name: mostly plausible, often made up, sometimes hostile."""
    pick = rng.random()
    if pick < 0.5:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-") for _ in range(8))
    if pick < 0.6:
        return rng.choice(("default", "", "(other)", "~", "acme", " ", "a/b", "a~b"))
    if pick < 0.7:
        return "long-" + "x" * rng.choice((59, 60, 64, 65, 200, 2000))
    return text(rng, 30)


def instance_query(rng: random.Random) -> bytes:
    """A query string naming an instance, or failing to in some way."""
    name = instance(rng)
    pick = rng.random()
    if pick < 0.6:
        return b"?instance=" + quote(name, safe="").encode()
    if pick < 0.7:
        return b"?instance=" + name.encode("utf-8", "surrogatepass")
    if pick < 0.8:
        return b"?instance=a&instance=b&" + quote(name).encode()
    return rng.choice(
        (b"?", b"?instance", b"?instance=%", b"?instance=%zz", b"?instance=%ff%fe", b"?&&=&")
    ) + rng.choice((b"", b"&x=" + b"y" * rng.choice((1, 5000))))
