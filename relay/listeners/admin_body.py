"""An admin POST's body, read within its size and time limits; refusals as JSON.

Every refusal of the admin port has the body ``{"error": "..."}``; a body too
large is refused as soon as that is known (413), one too slow gets 408, one
that cannot be decoded 400, and a client that went away is noted at DEBUG.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import web

from relay.config import LimitsConfig

log = logging.getLogger("relay.admin")

JSON = "application/json"


async def read_body(request: web.Request, limits: LimitsConfig) -> bytes:
    """Read the body within the size and time limits.

    A declared Content-Length over the limit is refused (413) before reading a
    byte; a chunked or compressed body is read piecewise (aiohttp inflates in
    bounded steps) and refused as soon as the pieces add up past the limit, so
    memory never holds more than the limit. A body that trickles in slower
    than the deadline gets 408; one that cannot be decoded (say, a
    ``Content-Encoding: gzip`` body that is not gzip) gets 400.

    Raises:
        web.HTTPException: the refusal to answer with (also when the client
            has disconnected before sending the whole body).
    """
    limit = limits.admin_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise body_too_large(limit)
    try:
        if declared is not None and request.content.is_eof():
            # The whole body came with the headers, as a small POST does: take it
            # without a deadline or an async iteration (a compressed one may still
            # have inflated past the limit).
            body = request.content.read_nowait()
            if len(body) > limit:
                raise body_too_large(limit)
            return body
        chunks = []
        size = 0
        async with asyncio.timeout(limits.admin_body_seconds):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise body_too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        log.warning("a POST body from %s was too slow; cut off", request.remote)
        raise refusal(web.HTTPRequestTimeout, "request body too slow") from None
    except web.RequestPayloadError as exc:
        raise _undecodable(request, exc) from None
    except ConnectionResetError:
        # The client's own doing (a timeout on its side, a restart): nothing
        # for an operator to act on.
        log.debug("a client at %s went away in the middle of a POST body", request.remote)
        # The answer goes nowhere (aiohttp notes that at DEBUG), but it is an answer.
        raise refusal(web.HTTPBadRequest, "the connection closed before the whole body") from None
    return b"".join(chunks)


def _undecodable(request: web.Request, exc: web.RequestPayloadError) -> web.HTTPException:
    """The 400 for a body aiohttp could not decode, closing the connection after it."""
    # aiohttp's own words are the cause's (e.g. "Can not decode content-encoding: gzip").
    reason = getattr(exc.__cause__, "message", None) or str(exc)
    log.warning("refused a POST body from %s: %s", request.remote, reason)
    # Nothing more of this request can be read. Without marking its end, aiohttp
    # would try to drain the rest after answering, meet the same error again and
    # log it as unhandled.
    request.content.feed_eof()
    answer = refusal(web.HTTPBadRequest, f"the body cannot be read: {reason}")
    answer.force_close()
    return answer


def body_too_large(limit: int) -> web.HTTPRequestEntityTooLarge:
    """The 413 for a body over ``limit`` bytes (logged)."""
    log.warning("refused a POST body over the %d-byte limit", limit)
    return web.HTTPRequestEntityTooLarge(
        max_size=limit,
        actual_size=-1,
        text=error_text(f"request body exceeds the {limit}-byte limit"),
        content_type=JSON,
    )


def refusal(
    kind: type[web.HTTPException], message: str, headers: dict[str, str] | None = None
) -> web.HTTPException:
    """An HTTP error of class ``kind`` whose body is ``{"error": message}``."""
    return kind(text=error_text(message), content_type=JSON, headers=headers)


def error_text(message: str) -> str:
    """``{"error": message}`` as the text of a refusal's body."""
    return orjson.dumps({"error": message}).decode()
