"""What answers at the broker's address, judged from its first bytes (no sockets)."""

from __future__ import annotations

import pytest

from relay.links.broker_answer import QUOTE_LIMIT, Answer, classify, describe, quote


@pytest.mark.parametrize(
    ("reply", "speaks_tls", "answer"),
    [
        (b"+PONG\r\n", False, Answer.REDIS),
        (b"-NOAUTH Authentication required.\r\n", False, Answer.REDIS),
        (b"-DENIED Redis is running in protected mode\r\n", False, Answer.REDIS),
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", False, Answer.HTTP),
        (b"HTTP/1.0 400 Bad request", False, Answer.HTTP),
        (b"\x15\x03\x01\x00\x02\x02\x46", False, Answer.TLS),
        (b"", True, Answer.TLS),
        (b"", False, Answer.CLOSED),
        (None, False, Answer.SILENT),
        (b"SSH-2.0-OpenSSH_9.2\r\n", False, Answer.OTHER),
        (b"\x15", False, Answer.OTHER),
    ],
)
def test_first_bytes_say_what_the_server_is(
    reply: bytes | None, speaks_tls: bool, answer: Answer
) -> None:
    assert classify(reply, speaks_tls=speaks_tls) is answer


def test_redis_needs_no_other_words_unless_the_url_wants_tls() -> None:
    assert describe(b"+PONG\r\n", url_uses_tls=False) is None
    assert describe(b"+PONG\r\n", url_uses_tls=True) == (
        "Redis answers there without TLS: the URL should start with redis://"
    )


def test_each_foreign_server_is_named() -> None:
    http = describe(b"HTTP/1.1 400 Bad Request\r\n\r\n", url_uses_tls=False)
    assert http == (
        'not Redis: an HTTP server ("HTTP/1.1 400 Bad Request") is listening at that address'
    )
    assert describe(b"", speaks_tls=True, url_uses_tls=False) == (
        "a TLS server answers there, not plain Redis: if it is Redis with TLS, "
        "the URL should start with rediss://"
    )
    assert describe(b"", url_uses_tls=False) == (
        "not Redis: a server that closes every connection at once without a word "
        "is listening at that address"
    )
    assert describe(None, url_uses_tls=True) == (
        "not Redis: a server that accepts connections and never answers "
        "is listening at that address"
    )
    assert describe(b"SSH-2.0-OpenSSH_9.2\r\n", url_uses_tls=False) == (
        'not Redis: a server that answers "SSH-2.0-OpenSSH_9.2" is listening at that address'
    )


def test_a_quote_is_one_short_printable_line() -> None:
    assert quote(b"\x00\xffab\tc\r\nsecond line") == '"\\x00\\xffab\\x09c"'
    long = b"x" * (QUOTE_LIMIT + 10)
    assert quote(long) == '"' + "x" * QUOTE_LIMIT + '..."'
    assert quote(None) == '""'
