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

``guard_server`` wraps an admin runner's server (once set up, before its
sites start) so that each gets a JSON 400 or 417, or one DEBUG line.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from yarl import URL

log = logging.getLogger("relay.admin")

#: The URL a request without a target is built with, so that it can be answered at all.
_NOWHERE = URL.build(path="/", encoded=True)


def guard_server(server: web.Server) -> None:
    """Make ``server`` answer the requests above instead of failing on them."""
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
