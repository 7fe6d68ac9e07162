"""What answers at the broker's address, judged from its first bytes: Redis, or what instead.

When a session fails as if the server were not Redis (redis-py's ``Protocol
error, got "H" as reply type byte``, a connection closed before any reply, a
TLS handshake that fails), the broker opens one more connection, sends
``PROBE`` and reads the first bytes of the answer (``relay.broker.connect``);
this module turns those bytes into words an operator can act on. Pure: no I/O.
"""

from __future__ import annotations

import enum

#: What the probe sends: a Redis inline PING, and an empty line so that an HTTP
#: server sees a complete (bad) request and answers it instead of waiting.
#: Redis ignores the empty line and answers ``+PONG`` (or ``-NOAUTH``, ...).
PROBE = b"PING\r\n\r\n"

#: At most this much of a foreign answer is quoted in the reason.
QUOTE_LIMIT = 40

# The first byte of every RESP2/RESP3 reply.
_RESP_TYPES = frozenset(b"+-:$*_,#!=(%~>|")
# TLS record types (change_cipher_spec, alert, handshake, application_data),
# each followed by the protocol's major version, 3.
_TLS_RECORD_TYPES = frozenset(b"\x14\x15\x16\x17")


class Answer(enum.Enum):
    """What the server at the broker's address turned out to be."""

    REDIS = "redis"
    HTTP = "http"
    TLS = "tls"
    #: Closed the connection without sending a byte.
    CLOSED = "closed"
    #: Kept the connection open and said nothing.
    SILENT = "silent"
    OTHER = "other"


def classify(reply: bytes | None, *, speaks_tls: bool = False) -> Answer:
    """Judge the first bytes ``reply`` the server sent to ``PROBE``.

    ``reply`` is None when nothing came before the probe's timeout, ``b""``
    when the server closed the connection at once; ``speaks_tls`` says a TLS
    handshake with the same address succeeded (a TLS server usually closes a
    plain connection without a word).
    """
    if reply is None:
        return Answer.SILENT
    if reply[:1] and reply[0] in _RESP_TYPES:
        return Answer.REDIS
    if reply.startswith(b"HTTP/"):
        return Answer.HTTP
    if len(reply) >= 2 and reply[0] in _TLS_RECORD_TYPES and reply[1] == 3:
        return Answer.TLS
    if speaks_tls:
        return Answer.TLS
    return Answer.CLOSED if not reply else Answer.OTHER


def describe(reply: bytes | None, *, speaks_tls: bool = False, url_uses_tls: bool) -> str | None:
    """The reason the broker logs for what answered, or None when it is Redis after all.

    ``url_uses_tls``: the URL says ``rediss://`` (so the probe spoke plain
    text to a server the client expected TLS from).
    """
    answer = classify(reply, speaks_tls=speaks_tls)
    if answer is Answer.REDIS:
        if url_uses_tls:
            return "Redis answers there without TLS: the URL should start with redis://"
        return None
    if answer is Answer.TLS and not url_uses_tls:
        return (
            "a TLS server answers there, not plain Redis: if it is Redis with TLS, "
            "the URL should start with rediss://"
        )
    what = {
        Answer.HTTP: f"an HTTP server ({quote(reply)})",
        Answer.TLS: "a TLS server that does not speak Redis",
        Answer.CLOSED: "a server that closes every connection at once without a word",
        Answer.SILENT: "a server that accepts connections and never answers",
        Answer.OTHER: f"a server that answers {quote(reply)}",
    }[answer]
    return f"not Redis: {what} is listening at that address"


def quote(reply: bytes | None) -> str:
    """The first line of ``reply``, at most ``QUOTE_LIMIT`` bytes, quoted and made printable."""
    line = (reply or b"").split(b"\n", 1)[0].rstrip(b"\r")
    shown = line[:QUOTE_LIMIT].decode("ascii", "backslashreplace")
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in shown)
    return f'"{shown}{"..." if len(line) > QUOTE_LIMIT else ""}"'
