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
from relay.core.refusal_lines import RefusalLines

log = logging.getLogger("relay.admin")

JSON = "application/json"


async def read_body(request: web.Request, limits: LimitsConfig, lines: RefusalLines) -> bytes:
    """Read the body within the size and time limits.

    A declared Content-Length over the limit is refused (413) before reading a
    byte; a chunked or compressed body is read piecewise (aiohttp inflates in
    bounded steps) and refused as soon as the pieces add up past the limit, so
    memory never holds more than the limit. A body that trickles in slower
    than the deadline gets 408; one that cannot be decoded (say, a
    ``Content-Encoding: gzip`` body that is not gzip) gets 400. Each refusal's
    log line goes through ``lines``.

    Raises:
        web.HTTPException: the refusal to answer with (also when the client
            has disconnected before sending the whole body).
    """
    limit = limits.admin_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise body_too_large(request, limit, lines)
    try:
        if declared is not None and request.content.is_eof():
            # The whole body came with the headers, as a small POST does: take it
            # without a deadline or an async iteration (a compressed one may still
            # have inflated past the limit).
            body = request.content.read_nowait()
            if len(body) > limit:
                raise body_too_large(request, limit, lines)
            return body
        chunks = []
        size = 0
        async with asyncio.timeout(limits.admin_body_seconds):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise body_too_large(request, limit, lines)
                chunks.append(chunk)
    except TimeoutError:
        log_refusal(lines, "slow body", "a POST body from %s was too slow; cut off", request.remote)
        raise refusal(web.HTTPRequestTimeout, "request body too slow") from None
    except web.RequestPayloadError as exc:
        raise _undecodable(request, exc, lines) from None
    except ConnectionResetError:
        # The client's own doing (a timeout on its side, a restart): nothing
        # for an operator to act on.
        log.debug("a client at %s went away in the middle of a POST body", request.remote)
        # The answer goes nowhere (aiohttp notes that at DEBUG), but it is an answer.
        raise refusal(web.HTTPBadRequest, "the connection closed before the whole body") from None
    return b"".join(chunks)


def _undecodable(
    request: web.Request, exc: web.RequestPayloadError, lines: RefusalLines
) -> web.HTTPException:
    """The 400 for a body aiohttp could not decode, closing the connection after it."""
    # aiohttp's own words are the cause's (e.g. "Can not decode content-encoding: gzip").
    reason = getattr(exc.__cause__, "message", None) or str(exc)
    log_refusal(
        lines, "undecodable body", "refused a POST body from %s: %s", request.remote, reason
    )
    # Nothing more of this request can be read. Without marking its end, aiohttp
    # would try to drain the rest after answering, meet the same error again and
    # log it as unhandled.
    request.content.feed_eof()
    answer = refusal(web.HTTPBadRequest, f"the body cannot be read: {reason}")
    answer.force_close()
    return answer


def body_too_large(
    request: web.Request, limit: int, lines: RefusalLines
) -> web.HTTPRequestEntityTooLarge:
    """The 413 for a body over ``limit`` bytes (logged through ``lines``)."""
    log_refusal(
        lines,
        "large body",
        "refused a POST body from %s over the %d-byte limit",
        request.remote,
        limit,
    )
    return web.HTTPRequestEntityTooLarge(
        max_size=limit,
        actual_size=-1,
        text=error_text(f"request body exceeds the {limit}-byte limit"),
        content_type=JSON,
    )


def log_refusal(lines: RefusalLines, kind: str, message: str, *args: object) -> None:
    """Log a refused request: the first of its ``kind`` in an interval, with how many since.

    Anyone who reaches the port can send refused requests as fast as they
    like; the log gets one line per kind per interval (``RefusalLines``).
    """
    count = lines.due(kind)
    if count > 1:
        log.warning(message + " (%d more since the last such line)", *args, count - 1)
    elif count:
        log.warning(message, *args)


def refusal(
    kind: type[web.HTTPException], message: str, headers: dict[str, str] | None = None
) -> web.HTTPException:
    """An HTTP error of class ``kind`` whose body is ``{"error": message}``."""
    return kind(text=error_text(message), content_type=JSON, headers=headers)


def error_text(message: str) -> str:
    """``{"error": message}`` as the text of a refusal's body."""
    return orjson.dumps({"error": message}).decode()
