"""Hostile requests for the admin port, from a seeded generator.

Notification bodies and peer batches of every wrong shape, broken framing
(lengths that lie, chunks that do not add up, both at once, pipelining) and
compression (gzip that is not gzip, truncated, a bomb), odd methods, paths,
hosts, query strings, versions and headers, and now and then bytes flipped
anywhere in the request.
"""

from __future__ import annotations

import gzip
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from tests.fuzz import junk
from tests.fuzz.cases import Case, Ending
from tests.fuzz.wire import chunked, request

#: Keys posts name and browsers subscribe to, so that some posts are delivered.
KEYS = (*(f"PHID-FUZZ-{n}" for n in range(8)), "relay.node")

PATHS = (
    b"/",
    b"/peer/batch",
    b"/status/",
    b"/status",
    b"/metrics",
    b"/dashboard/",
    b"/dashboard",
    b"/dashboard/vendor/uplot/uPlot.iife.min.js?v=0",
    b"/dashboard/vendor/uplot/uPlot.min.css",
    b"/dashboard/vendor/uplot/LICENSE",
    b"/dashboard/vendor/uplot/..%2f..%2fdashboard.html",
    b"/dashboard/vendor/uplot/%ff",
    b"/cluster-status/",
    b"/cluster-status",
    b"/health/live",
    b"/health/ready",
    b"/nope",
    b"//",
    b"/./status/",
    b"/../../etc/passwd",
    b"/%2e%2e/",
    b"/%00",
    b"/%ff%fe",
    b"/status/%",
    b"/dashboard/?x=%zz",
    b"*",
    b"http://relay/status/",
    b"http://[::1]:99999/",
    b"https://relay:22281/metrics",
    b"relay:22281",
    b"/\xff\xfe",
    b"/" + b"a" * 9000,
)
METHODS = (
    b"GET",
    b"POST",
    b"PUT",
    b"DELETE",
    b"HEAD",
    b"OPTIONS",
    b"PATCH",
    b"TRACE",
    b"CONNECT",
    b"PRI",
    b"get",
    b"post",
    b"M-SEARCH",
    b"X" * 200,
    b"GE T",
    b"G\x00T",
    b"\xffPOST",
    b"",
)
VERSIONS = (
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/0.9",
    b"HTTP/2.0",
    b"HTTP/1.2",
    b"HTTP/9.9",
    b"HTTP/1.1x",
    b"HTTX/1.1",
    b"http/1.1",
    b"HTTP/1",
    b"",
)


@dataclass
class Draft:
    """A request being put together; ``framing`` says how its body is delimited."""

    method: bytes = b"POST"
    target: bytes = b"/"
    version: bytes = b"HTTP/1.1"
    headers: list[tuple[bytes, bytes]] = field(default_factory=lambda: [(b"Host", b"relay")])
    body: bytes = b""
    framing: str = "length"

    def build(self, rng: random.Random) -> bytes:
        """The request's bytes, framed as ``framing`` says."""
        headers = list(self.headers)
        body = self.body
        size = len(body)
        if self.framing == "length":
            headers.append((b"Content-Length", b"%d" % size))
        elif self.framing in ("chunked", "both", "bad-chunks"):
            headers.append((b"Transfer-Encoding", b"chunked"))
            body = chunked(body, [rng.randint(1, 64) for _ in range(rng.randint(0, 4))])
            if self.framing == "both":
                headers.append((b"Content-Length", b"%d" % size))
            elif self.framing == "bad-chunks":
                body = junk.mutate(rng, body)
        elif self.framing == "short":
            headers.append((b"Content-Length", b"%d" % max(size - rng.randint(1, 10), 0)))
        elif self.framing == "long":
            headers.append((b"Content-Length", b"%d" % (size + rng.randint(1, 1000))))
        elif self.framing == "double":
            headers.append((b"Content-Length", b"%d" % size))
            headers.append((b"Content-Length", b"%d" % rng.choice((size, size + 1))))
        elif self.framing == "odd-length":
            value = rng.choice((b"-1", b"+5", b"0x10", b"1e3", b" 7", b"99999999999999999999"))
            headers.append((b"Content-Length", value))
        elif self.framing == "odd-chunked":
            value = rng.choice((b"gzip, chunked", b"chunked, identity", b"Chunked", b"xchunked"))
            headers.append((b"Transfer-Encoding", value))
        rng.shuffle(headers)
        return request(self.method, self.target, self.version, headers, body)


def notification_body(rng: random.Random) -> bytes:
    """A notification, right or wrong in one of many ways."""
    base = {
        "key": rng.choice(KEYS),
        "type": rng.choice(("notification", "message", "workboards")),
        "subscribers": rng.sample(KEYS, rng.randint(1, 3)),
        "uniqueID": f"{rng.getrandbits(128):032x}",
    }
    pick = rng.randrange(12)
    if pick < 3:
        return junk.dumps(base)
    if pick == 3:
        base[rng.choice(("key", "type", "subscribers", "uniqueID", "touched"))] = junk.value(rng)
    elif pick == 4:
        del base[rng.choice(list(base))]
    elif pick == 5:
        base.update({junk.text(rng, 10): junk.value(rng) for _ in range(rng.randint(1, 5))})
    elif pick == 6:
        count = rng.choice((0, 1, 1000, 10_000, 10_001))
        base["subscribers"] = [f"K{n}".ljust(rng.choice((1, 300)), "k") for n in range(count)]
    elif pick == 7:
        base["touched"] = [junk.text(rng, 20) for _ in range(rng.choice((1, 3, 64, 65, 200)))]
    elif pick == 8:
        return b'{"subscribers":["PHID-FUZZ-0"],"data":' + junk.nested(rng) + b"}"
    elif pick == 9:
        return b'{"subscribers":["PHID-FUZZ-1"],"key":' + junk.raw_json_text(rng) + b"}"
    elif pick == 10:
        return rng.choice((junk.raw_json_text(rng), junk.dumps(junk.value(rng)), junk.nested(rng)))
    else:
        return junk.mutate(rng, junk.dumps(base))
    return junk.dumps(base)


def batch_body(rng: random.Random) -> bytes:
    """A peer batch, right or wrong in one of many ways."""

    def record() -> object:
        message = {
            "subscribers": rng.sample(KEYS, 2),
            "uniqueID": f"{rng.getrandbits(128):032x}",
            "touched": [f"PEER{rng.randrange(10):012d}"],
        }
        item: dict[str, object] = {
            "instance": junk.instance(rng),
            "covered": [f"PEER{rng.randrange(10):012d}"],
            "message": message,
        }
        if rng.random() < 0.3:
            item[rng.choice(("instance", "covered", "message"))] = junk.value(rng)
        if rng.random() < 0.1:
            message[rng.choice(("subscribers", "touched", "uniqueID"))] = junk.value(rng)
        return item if rng.random() < 0.95 else junk.value(rng)

    pick = rng.randrange(8)
    if pick < 4:
        return junk.dumps([record() for _ in range(rng.randint(0, 5))])
    if pick == 4:
        return junk.dumps([record() for _ in range(rng.choice((1024, 1025)))])
    if pick == 5:
        return junk.dumps(junk.value(rng))
    if pick == 6:
        return b'[{"instance":"a","covered":[],"message":' + junk.nested(rng) + b"}]"
    return junk.mutate(rng, junk.dumps([record()]))


def _post(rng: random.Random, target: bytes, body: bytes) -> Draft:
    return Draft(target=target, body=body, framing=rng.choice(("length",) * 6 + ("chunked",)))


def _notification(rng: random.Random) -> Draft:
    return _post(rng, b"/" + junk.instance_query(rng), notification_body(rng))


def _batch(rng: random.Random) -> Draft:
    draft = _post(rng, b"/peer/batch", batch_body(rng))
    if rng.random() < 0.5:
        draft.headers.append((b"X-Relay-Peer", rng.choice((b"batch/1", b"batch/9", b"\xff"))))
    return draft


def _method(rng: random.Random) -> Draft:
    body = notification_body(rng) if rng.random() < 0.5 else b""
    return Draft(method=rng.choice(METHODS), target=rng.choice(PATHS), body=body)


def _path(rng: random.Random) -> Draft:
    target = rng.choice(PATHS)
    if rng.random() < 0.3:
        target = b"/" + quote(junk.text(rng, 30)).encode()
    if rng.random() < 0.3:
        target += junk.instance_query(rng)
    return Draft(method=rng.choice((b"GET", b"GET", b"POST", b"HEAD")), target=target, framing="")


def _host(rng: random.Random) -> Draft:
    target = rng.choice((b"/dashboard/", b"/dashboard", b"/status/", b"/", b"/metrics"))
    draft = Draft(method=b"GET", target=target, framing="")
    pick = rng.random()
    if pick < 0.7:
        draft.headers = [(b"Host", rng.choice(junk.HOSTS))]
    elif pick < 0.8:
        draft.headers = []
    elif pick < 0.9:
        draft.headers = [(b"Host", b"relay"), (b"Host", rng.choice(junk.HOSTS))]
    else:
        draft.headers = [(b"Host", bytes(rng.randrange(256) for _ in range(rng.randint(1, 20))))]
    return draft


def _query(rng: random.Random) -> Draft:
    if rng.random() < 0.5:
        return Draft(method=b"GET", target=b"/status/" + junk.instance_query(rng), framing="")
    return _notification(rng)


_FRAMINGS = (
    *("chunked", "none", "short", "long", "double", "bad-chunks", "both"),
    *("odd-length", "odd-chunked", "pipelined"),
)


def _framing(rng: random.Random) -> Draft:
    framing = rng.choice(_FRAMINGS)
    draft = Draft(target=b"/" + junk.instance_query(rng), body=notification_body(rng))
    draft.framing = "length" if framing == "pipelined" else framing
    if framing == "pipelined":
        draft.body += _notification(rng).build(rng) + _path(rng).build(rng)
    return draft


def _encoding(rng: random.Random) -> Draft:
    body = notification_body(rng)
    pick = rng.randrange(10)
    name = b"gzip"
    if pick < 2:
        body = gzip.compress(body)
    elif pick == 2:
        body = junk.mutate(rng, gzip.compress(body))
    elif pick == 3:
        body = gzip.compress(body)[: rng.randint(0, 20)]
    elif pick == 4:
        body = gzip.compress(b'{"subscribers":["K"],"pad":"' + b"0" * 2_000_000 + b'"}')
    elif pick == 5:
        name, body = b"deflate", zlib.compress(body)
    elif pick == 6:
        name, body = b"deflate", zlib.compress(body)[2:-4]
    elif pick == 7:
        name = rng.choice((b"br", b"zstd", b"x-unknown", b"compress", b"identity"))
    elif pick == 8:
        name, body = b"gzip, gzip", gzip.compress(gzip.compress(body))
    else:
        name = rng.choice((b"gzip", b"deflate", b"GZIP"))
    draft = _post(rng, b"/" + junk.instance_query(rng), body)
    draft.headers.append((b"Content-Encoding", name))
    return draft


def _version(rng: random.Random) -> Draft:
    draft = _method(rng) if rng.random() < 0.5 else _notification(rng)
    draft.version = rng.choice(VERSIONS)
    return draft


_ODD_HEADERS = (
    (b"Expect", b"100-continue"),
    (b"Expect", b"100-continue"),
    (b"Expect", b"200-ok"),
    (b"Connection", b"Upgrade"),
    (b"Upgrade", b"websocket"),
    (b"Upgrade", b"h2c"),
    (b"Authorization", b"Bearer "),
    (b"Authorization", b"Bearer \xff\xfe"),
    (b"Authorization", b"Basic Zm9vOmJhcg=="),
    (b"Content-Type", b"text/plain; charset=\xff"),
    (b"Content-Type", b"multipart/form-data; boundary="),
    (b"Connection", b"close"),
    (b"Connection", b"keep-alive, Upgrade, close"),
    (b"X-Forwarded-For", b"999.1.1.1"),
    (b"X-Folded", b"a\r\n b"),
    (b"X Spaced", b"v"),
    (b"X-Nul", b"a\x00b"),
    (b"X-Long", b"v" * 9000),
    (b"", b"empty name"),
)


def _headers(rng: random.Random) -> Draft:
    draft = _notification(rng) if rng.random() < 0.7 else _path(rng)
    draft.headers.extend(rng.sample(_ODD_HEADERS, rng.randint(1, 3)))
    if rng.random() < 0.1:
        draft.headers.extend((b"X-H%d" % n, b"v") for n in range(rng.choice((100, 130))))
    return draft


def _garbage(rng: random.Random) -> bytes:
    return rng.choice(
        (
            bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))),
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),
            b"CONNECT \r\n\r\n",
            b"GET \r\n\r\n",
            b"\r\n\r\n\r\n",
            b"GET / HTTP/1.1\n\n",
        )
    )


_KINDS: dict[str, tuple[int, Callable[[random.Random], Draft]]] = {
    "notification": (20, _notification),
    "batch": (8, _batch),
    "method": (6, _method),
    "path": (8, _path),
    "host": (8, _host),
    "query": (8, _query),
    "framing": (10, _framing),
    "encoding": (8, _encoding),
    "version": (5, _version),
    "headers": (10, _headers),
}


def admin_case(rng: random.Random) -> Case:
    """One hostile connection to the admin port."""
    names = [*_KINDS, "garbage"]
    kind = rng.choices(names, weights=[weight for weight, _ in _KINDS.values()] + [3])[0]
    data = _garbage(rng) if kind == "garbage" else _KINDS[kind][1](rng).build(rng)
    if rng.random() < 0.08:
        kind += "+mutated"
        data = junk.mutate(rng, data)
    chunks = [data]
    if len(data) > 2 and rng.random() < 0.2:
        at = rng.randrange(1, len(data))
        chunks = [data[:at], data[at:]]
    ending: Ending = rng.choices(("half-close", "linger", "reset"), weights=(75, 15, 10))[0]
    return Case(port="admin", note=f"admin/{kind}", chunks=chunks, ending=ending)
