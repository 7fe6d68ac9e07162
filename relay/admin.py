"""The admin listener: where application servers and peers POST notifications, and status is read.

``POST /`` takes a notification and answers with this node's fingerprint;
``GET /status/`` answers with Aphlict's status keys plus relay's own sections.
Everything else is 404 (unknown path) or 405 (wrong method). Optional guards:
an allow-list of client networks (403 for others) and a shared secret that
POSTs must carry (401 without it, 403 with a wrong one).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from relay.config import AdminConfig, LimitsConfig
from relay.errors import NotificationError
from relay.hub import Hub
from relay.notification import instance_from_query, parse_notification
from relay.secret import Secret

log = logging.getLogger("relay.admin")

HUB = web.AppKey("hub", Hub)
LIMITS = web.AppKey("limits", LimitsConfig)
SECRET: web.AppKey[Secret | None] = web.AppKey("secret")
#: Extra status sections (``cluster`` and so on), each ``name -> () -> JSON-able``.
STATUS_SECTIONS = web.AppKey("status_sections", dict[str, Callable[[], Any]])

_JSON = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_admin_app(
    hub: Hub, *, limits: LimitsConfig, admin: AdminConfig, secret: Secret | None
) -> web.Application:
    """The aiohttp application serving the admin protocol for ``hub``."""
    middlewares = [_network_guard(admin.allowed_networks)] if admin.allowed_networks else []
    app = web.Application(client_max_size=limits.admin_body_bytes, middlewares=middlewares)
    app[HUB] = hub
    app[LIMITS] = limits
    app[SECRET] = secret
    app[STATUS_SECTIONS] = {}
    app.router.add_post("/", post_notification)
    app.router.add_get("/status/", get_status)
    return app


async def post_notification(request: web.Request) -> web.Response:
    """Route one notification; answer with this node's fingerprint."""
    _check_secret(request)
    hub = request.app[HUB]
    limits = request.app[LIMITS]
    raw = await _read_body(request, limits)
    try:
        notification = parse_notification(
            raw, max_subscribers=limits.max_subscribers, max_touched=limits.max_touched
        )
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


def _check_secret(request: web.Request) -> None:
    """Refuse a POST without the configured shared secret (when one is configured)."""
    secret = request.app[SECRET]
    if secret is None:
        return
    offered = request.headers.get("Authorization", "")
    if not offered.startswith("Bearer "):
        raise web.HTTPUnauthorized(
            text="this relay requires 'Authorization: Bearer <secret>'\n",
            headers={"WWW-Authenticate": 'Bearer realm="relay"'},
        )
    if not secret.matches(offered.removeprefix("Bearer ")):
        log.warning("refused a POST from %s: wrong shared secret", request.remote)
        raise web.HTTPForbidden(text="wrong shared secret\n")


async def _read_body(request: web.Request, limits: LimitsConfig) -> bytes:
    """Read the body within the size and time limits.

    A declared Content-Length over the limit is refused (413) before reading a
    byte; a chunked or compressed body is read piecewise (aiohttp inflates in
    bounded steps) and refused as soon as the pieces add up past the limit, so
    memory never holds more than the limit. A body that trickles in slower
    than the deadline gets 408.
    """
    limit = limits.admin_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(limits.admin_body_seconds):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        log.warning("a POST body from %s was too slow; cut off", request.remote)
        raise web.HTTPRequestTimeout(text="request body too slow\n") from None
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


def _network_guard(networks: tuple[str, ...]) -> Any:
    """A middleware answering 403 to clients outside ``networks``."""
    allowed = [ipaddress.ip_network(network, strict=False) for network in networks]

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            address = ipaddress.ip_address(request.remote or "")
        except ValueError:
            address = None
        if address is None or not any(address in network for network in allowed):
            log.warning("refused an admin request from %s: not in allowed_networks", request.remote)
            raise web.HTTPForbidden(text="this address may not use the admin port\n")
        return await handler(request)

    return guard
