r"""Hostile HTTP that aiohttp's server mishandles on its own, answered as the client's mistake.

These requests go wrong inside aiohttp, before relay's handlers and
middlewares run, so none of them can catch it:

- A request line without a target (``CONNECT \r\n\r\n``): aiohttp's C
  parser lets it through with no URL, building the request then fails in the
  connection's task, the client never gets an answer, and the log gets "Task
  exception was never retrieved" with a traceback.
- ``Expect: 100-continue`` from a client that has already half-closed:
  aiohttp answers ``100 Continue`` on every route before anything of relay's
  runs, meets the closing transport, and logs "Error handling request" with a
  traceback. Any other expectation, aiohttp quotes back in its 417, failing
  (500 and a traceback) on bytes that are not UTF-8.

- A request aiohttp's parser refuses (a broken request line, header or
  chunk): aiohttp answers 400 itself, in plain text that quotes the
  client's bytes back.

``guard_server`` wraps an admin runner's server (once set up, before its
sites start) so that each gets a JSON 400 or 417 (its words without the
client's bytes: ``fault_words``), or one DEBUG line.
"""

from __future__ import annotations

import asyncio
import logging
import re
from http import HTTPStatus

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpProcessingError, HttpVersion11
from aiohttp.http_exceptions import InvalidURLError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from yarl import URL

log = logging.getLogger("relay.admin")

#: The URL a request without a target is built with, so that it can be answered at all.
_NOWHERE = URL.build(path="/", encoded=True)


#: Where aiohttp's message about a malformed request starts quoting the client's bytes
#: (b'...', bytearray(b'...'), or a str's repr in the pure-Python parser's messages).
_QUOTED_BYTES = re.compile(r"\s(?:bytearray\()?b?['\"]")
#: The most of aiohttp's words kept.
_MOST_WORDS = 120


def fault_words(error: HttpProcessingError) -> str:
    """What was wrong with a malformed request, in aiohttp's words without the client's bytes.

    aiohttp's messages go on to quote the client's bytes (a header line or a
    request target, which could carry a secret) and put a caret under the
    fault; one is the request target itself, unquoted.
    """
    if isinstance(error, InvalidURLError):
        return "the request target is not a valid URL"
    words = _QUOTED_BYTES.split(str(error.message), maxsplit=1)[0]
    return " ".join(words.split()).rstrip(":")[:_MOST_WORDS]


class _JsonRefusals(RequestHandler):
    """aiohttp's connection handler, whose own refusals are JSON too."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The JSON answer for a request aiohttp could not parse or handle (closing)."""
        super().handle_error(request, status, exc, message)  # logs; refuses a started answer
        words = fault_words(exc) if isinstance(exc, HttpProcessingError) else ""
        answer = _refusal(status, words or HTTPStatus(status).phrase.lower())
        answer.force_close()
        return answer


class _GuardedServer(web.Server):
    """aiohttp's server, handing each connection to :class:`_JsonRefusals`."""

    def __call__(self) -> RequestHandler:
        """The handler of one new connection."""
        return _JsonRefusals(self, loop=self._loop, **self._kwargs)


def guard_server(server: web.Server) -> None:
    """Make ``server`` answer the requests above instead of failing on them."""
    # The runner built it; only how it makes each connection's handler changes.
    server.__class__ = _GuardedServer
    make_request = server.request_factory
    handle = server.request_handler

    def build(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if message.url is None:  # aiohttp types it as always set
            message = message._replace(url=_NOWHERE)
        return make_request(message, payload, protocol, writer, task)

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        if not request.raw_path:
            # The C parser keeps the target as it came: empty only when there was none.
            return _refusal(400, "the request line names no target")
        expect = request.headers.get("Expect", "100-continue")
        if request.version == HttpVersion11 and expect.lower() != "100-continue":
            # aiohttp would quote it back, and fail on bytes that are not UTF-8.
            return _refusal(417, "the only expectation understood is 100-continue")
        try:
            return await handle(request)
        except ConnectionResetError:
            # The client's own doing; whatever is answered now goes nowhere.
            log.debug("a client at %s went away before its request was answered", request.remote)
            return web.Response(status=400, headers=_CLOSE)

    server.request_factory = build
    server.request_handler = answer


_CLOSE = {"Connection": "close"}


def _refusal(status: int, message: str) -> web.Response:
    """A JSON refusal that closes the connection."""
    body = orjson.dumps({"error": message})
    return web.Response(status=status, body=body, content_type="application/json", headers=_CLOSE)
