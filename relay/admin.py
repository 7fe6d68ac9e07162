"""The admin listener: where application servers and peers POST notifications, and status is read.

``POST /`` takes a notification and answers with this node's fingerprint;
``GET /status/`` answers with Aphlict's status keys. Everything else is 404
(unknown path) or 405 (wrong method).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from relay.errors import NotificationError
from relay.hub import Hub
from relay.notification import instance_from_query, parse_notification

log = logging.getLogger("relay.admin")

HUB = web.AppKey("hub", Hub)
BODY_LIMIT = web.AppKey("body_limit", int)
#: Extra status sections (``cluster`` and so on), each ``name -> () -> JSON-able``.
STATUS_SECTIONS = web.AppKey("status_sections", dict[str, Callable[[], Any]])

_JSON = "application/json"


def create_admin_app(hub: Hub, *, body_limit: int) -> web.Application:
    """The aiohttp application serving the admin protocol for ``hub``."""
    app = web.Application(client_max_size=body_limit)
    app[HUB] = hub
    app[BODY_LIMIT] = body_limit
    app[STATUS_SECTIONS] = {}
    app.router.add_post("/", post_notification)
    app.router.add_get("/status/", get_status)
    return app


async def post_notification(request: web.Request) -> web.Response:
    """Route one notification; answer with this node's fingerprint."""
    hub = request.app[HUB]
    raw = await _read_body(request, request.app[BODY_LIMIT])
    try:
        notification = parse_notification(raw)
    except NotificationError as exc:
        return _json_error(400, str(exc))
    hub.publish(instance_from_query(request.query.get("instance")), notification)
    return web.Response(body=orjson.dumps({"fingerprint": hub.fingerprint}), content_type=_JSON)


async def get_status(request: web.Request) -> web.Response:
    """Aphlict's status keys for the instance, plus relay's own sections."""
    hub = request.app[HUB]
    status = hub.status(instance_from_query(request.query.get("instance")))
    status["fingerprint"] = hub.fingerprint
    for name, section in request.app[STATUS_SECTIONS].items():
        status[name] = section()
    return web.Response(body=orjson.dumps(status), content_type=_JSON)


async def _read_body(request: web.Request, limit: int) -> bytes:
    """Read the body, refusing with 413 the moment it is known to exceed ``limit``.

    A declared Content-Length over the limit is refused before reading a byte;
    a chunked or compressed body is read piecewise and refused as soon as the
    pieces add up past the limit, so memory never holds more than ``limit``.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    chunks = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> web.HTTPRequestEntityTooLarge:
    log.warning("refused a POST body over the %d-byte limit", limit)
    return web.HTTPRequestEntityTooLarge(
        max_size=limit,
        actual_size=-1,
        text=f"request body exceeds the {limit}-byte limit\n",
    )


def _json_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": message}), content_type=_JSON)
