"""The admin listener: where application servers and peers POST notifications, and status is read.

``POST /`` takes a notification and answers with this node's fingerprint;
``POST /peer/batch`` takes several from a relay peer (``relay.links.peer_batch``),
``POST /peer/presence`` a mesh peer's presence record (``relay.peering.presence``);
``GET /status/`` answers with Aphlict's status keys plus relay's own sections;
``GET /metrics`` serves Prometheus, ``/health/live`` and ``/health/ready`` load
balancers and orchestrators, ``GET /dashboard/`` people (``status_page``).
Everything else is 404 (unknown path) or 405 (wrong method). Optional guards:
an allow-list of client networks (403 for others) and a shared secret that
POSTs must carry (401 without it, 403 with a wrong one). Every refusal is
JSON, ``{"error": "..."}``, whatever refused it, and no client's mistake ends
in a 500 or a traceback in the log.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http import HttpProcessingError
from aiohttp.web_urldispatcher import _default_expect_handler
from prometheus_client import CONTENT_TYPE_LATEST

from relay.config import AdminConfig, LimitsConfig
from relay.config.secrets import Secret
from relay.core.hub import Hub, Outcome
from relay.core.instances import check_instance, instance_from_query
from relay.core.notification import bounds_of, parse_notification
from relay.core.refusal_lines import RefusalLines
from relay.core.snapshot import NodeSnapshot
from relay.errors import NotificationError
from relay.links.overload import OverloadGuard
from relay.links.peer_batch import (
    BATCH_CAPABILITY,
    BATCH_PATH,
    CAPABILITY_HEADER,
    BatchItem,
    decode_batch,
)
from relay.links.presence import PRESENCE_PATH, Announcement
from relay.listeners.admin_body import (
    JSON,
    body_too_large,
    error_text,
    log_refusal,
    read_body,
    refusal,
)
from relay.listeners.http_guard import fault_words
from relay.listeners.status_page import StaticFile, page_routes

log = logging.getLogger("relay.admin")


class _MalformedRequests(logging.Filter):
    """Turn aiohttp's traceback for a request it could not parse into one WARNING line.

    aiohttp answers a request that is not well-formed HTTP (a garbage request
    line, a broken chunk size, an unsupported Content-Encoding) with 400 by
    itself, before relay sees it, and logs the parser's exception at ERROR
    with a traceback (so too for a body it reads after the answer to throw it
    away); it is the client's mistake, not the node's.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Demote the record if it is about a malformed request; keep every record."""
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, web.RequestPayloadError):
            error = error.__cause__  # the parser's, when the body was not what it claimed
        if isinstance(error, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a malformed request from %s: %s"
            # aiohttp's message goes on to quote the client's bytes (a header
            # line or a request target, say, which could carry a secret) and put
            # a caret under the fault: only its words are kept.
            record.args = (remote, fault_words(error))
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


#: The logger aiohttp's HTTP server reports on for the admin listeners (``logger=``).
HTTP_LOG = logging.getLogger("relay.admin.http")
HTTP_LOG.addFilter(_MalformedRequests())

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin listener's settings in the config, as one value a reload replaces whole."""

    limits: LimitsConfig
    secret: Secret | None
    #: Clients outside these get 403; empty allows every address.
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, limits: LimitsConfig, admin: AdminConfig, secret: Secret | None) -> AdminSettings:
        """The settings from the config's ``limits`` and ``admin`` sections, and the secret."""
        networks = tuple(ipaddress.ip_network(net, strict=False) for net in admin.allowed_networks)
        return cls(limits, secret, networks)


@dataclass(frozen=True, slots=True)
class AdminState:
    """What the admin handlers read, built once by the node.

    Nothing here is replaced: what changes while the node runs (its
    settings after a reload, its readiness, its status page) is read through
    the callables, when a request comes.
    """

    hub: Hub
    #: The settings in force; a request runs under those it found when it came.
    settings: Callable[[], AdminSettings]
    #: What the node knows now: ``/status/`` and ``/cluster-status/`` read it.
    snapshot: Callable[[], NodeSnapshot]
    #: False until every listener is up, and again once shutdown begins.
    ready: Callable[[], bool]
    #: The live status page for a given host name; None while it is disabled.
    dashboard: Callable[[str], bytes | None]
    #: Whether the page is served now (a reload may turn it off or on).
    dashboard_enabled: Callable[[], bool]
    #: The files the page loads, by name (None: an unknown name); served while the page is.
    dashboard_file: Callable[[str], StaticFile | None]
    #: Prometheus' text exposition of the node's metrics (None: no ``/metrics``).
    render_metrics: Callable[[], bytes] | None = None
    #: Records one POST's (or peer batch's) delivery latency in seconds, and
    #: whether it reached any browser here.
    observe_latency: Callable[[float, bool], None] | None = None
    #: The overload policy, and the peer links that cannot keep up right now.
    overload: OverloadGuard | None = None
    congested: Callable[[], list[str]] = list
    #: For a worker of a multi-process node: the whole node's ``/status/`` and
    #: ``/metrics`` (None: this process is the whole node).
    node_status: Callable[[str], Awaitable[dict[str, Any]]] | None = None
    node_metrics: Callable[[], Awaitable[bytes]] | None = None
    #: Broker mode: waits until what was published so far holds its place in
    #: Redis' order, so a POST is answered only then (None: no broker).
    placed: Callable[[], Awaitable[None]] | None = None
    #: Mesh mode: keeps a peer's presence record (None: presence is not kept here).
    heard: Callable[[Announcement], None] | None = None
    #: When a refused request last got its log line, by kind.
    refusal_lines: RefusalLines = field(default_factory=RefusalLines)


STATE = web.AppKey("state", AdminState)

#: On every receipt: tells relay peers that this node takes batches (Aphlict ignores it).
_RECEIPT_HEADERS = {CAPABILITY_HEADER: BATCH_CAPABILITY}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_admin_app(state: AdminState) -> web.Application:
    """The aiohttp application serving the admin protocol from ``state``."""
    app = web.Application(
        client_max_size=state.settings().limits.admin_body_bytes,
        # Outermost first: the guard's refusals are turned into JSON too.
        middlewares=[_json_errors, _network_guard],
    )
    app[STATE] = state
    for path, handler in (
        ("/", post_notification),
        (BATCH_PATH, post_batch),
        (PRESENCE_PATH, post_presence),
    ):
        app.router.add_post(path, handler, expect_handler=_continue_unless_refused)
    app.router.add_get("/status/", get_status)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/health/live", get_live)
    app.router.add_get("/health/ready", get_ready)
    # The status page and its files (relay.listeners.status_page).
    app.router.add_routes(page_routes(lambda request: request.app[STATE]))
    app.router.add_get("/cluster-status/", get_cluster_status)
    # relay's own pages, typed without the slash: send the browser on. (Not
    # /status, whose 404 Aphlict's clients know; Phorge's POSTs refuse
    # redirects anyway.)
    app.router.add_get("/dashboard", _add_slash)
    app.router.add_get("/cluster-status", _add_slash)
    return app


async def post_notification(request: web.Request) -> web.Response:
    """Route one notification; answer with this node's fingerprint."""
    arrived = time.perf_counter()
    state, settings, raw = await _authorised_body(request)
    try:
        notification = parse_notification(raw, **bounds_of(settings.limits))
        instance = check_instance(instance_from_query(request.query.get("instance")))
    except NotificationError as exc:
        _log_refusal(request, "post", "refused a post from %s: %s", exc)
        return _json_error(400, str(exc))
    # Only posts from application servers (nothing in ``touched``) may be
    # refused: a peer's message was accepted by another node already.
    overload = state.overload
    if not notification.touched and overload is not None and not overload.admit(state.congested()):
        return web.Response(
            status=503,
            body=b'{"error":"peer links are not keeping up; try another admin server"}',
            content_type=JSON,
            headers={"Retry-After": "1"},
        )
    # A post straight from an application gets a uniqueID if it has none, so
    # identical posts stay distinct messages all through the cluster.
    notification = notification.identified()
    [outcome] = await _route(state, arrived, [BatchItem(instance, notification, frozenset())])
    if outcome in (Outcome.LOOPED, Outcome.DUPLICATE) and log.isEnabledFor(logging.DEBUG):
        # Still a 200: the sender's copy is in the cluster already (a retry
        # to a second admin server, or a message that came back around).
        log.debug("a POST from %s was not delivered again: %s", request.remote, outcome.value)
    return web.Response(
        body=orjson.dumps({"fingerprint": state.hub.fingerprint}),
        content_type=JSON,
        headers=_RECEIPT_HEADERS,
    )


async def _route(state: AdminState, arrived: float, posts: list[BatchItem]) -> list[Outcome]:
    """Hand ``posts`` to the hub; in broker mode, return once they hold their place in Redis.

    A POST is answered only then, so that a post the application makes after
    the answer comes after this one on every node. Records the delivery
    latency, for the charts only when a browser here listens to a post.
    """
    hub = state.hub
    reached_before = hub.deliveries
    outcomes = [
        hub.publish(post.instance, post.notification, post.covered, resent=post.resent)
        for post in posts
    ]
    held = [post for post, outcome in zip(posts, outcomes, strict=True) if outcome is Outcome.HELD]
    if held and state.placed is not None:
        await state.placed()
    if state.observe_latency is not None and posts:
        reached = hub.deliveries > reached_before or any(
            hub.listened(post.instance, post.notification.subscribers) for post in held
        )
        state.observe_latency(time.perf_counter() - arrived, reached)
    return outcomes


async def post_batch(request: web.Request) -> web.Response:
    """Route a relay peer's batch; answer with this node's fingerprint and the count taken."""
    arrived = time.perf_counter()
    state, settings, raw = await _authorised_body(request)
    try:
        items = decode_batch(raw, **bounds_of(settings.limits))
    except NotificationError as exc:
        _log_refusal(request, "batch", "refused a batch from %s: %s", exc)
        return _json_error(400, str(exc))
    await _route(state, arrived, items)
    return web.Response(
        body=orjson.dumps({"fingerprint": state.hub.fingerprint, "accepted": len(items)}),
        content_type=JSON,
        headers=_RECEIPT_HEADERS,
    )


async def post_presence(request: web.Request) -> web.Response:
    """Keep a mesh peer's presence record (``relay.peering.presence``); answer the fingerprint."""
    state, _, raw = await _authorised_body(request)
    if state.heard is None:
        return _json_error(404, "this node keeps no presence of peers (mesh mode only)")
    try:
        found = Announcement.decode(raw)
    except ValueError as exc:
        _log_refusal(request, "presence", "refused a presence record from %s: %s", exc)
        return _json_error(400, str(exc))
    state.heard(found)
    # Named like a receipt: the sender's own entry in its cluster list learns it is itself.
    return web.Response(
        body=orjson.dumps({"fingerprint": state.hub.fingerprint}), content_type=JSON
    )


async def get_status(request: web.Request) -> web.Response:
    """Aphlict's status keys for the instance, plus relay's own sections."""
    state = request.app[STATE]
    instance = instance_from_query(request.query.get("instance"))
    if state.node_status is not None:
        status = await state.node_status(instance)
    else:
        status = state.snapshot().status(instance)
    return web.Response(body=orjson.dumps(status), content_type=JSON)


async def get_metrics(request: web.Request) -> web.Response:
    """Prometheus' text exposition of the node's metrics."""
    state = request.app[STATE]
    if state.node_metrics is not None:
        body = await state.node_metrics()
    elif state.render_metrics is not None:
        body = state.render_metrics()
    else:
        raise refusal(web.HTTPNotFound, "metrics are not collected on this node")
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def get_cluster_status(request: web.Request) -> web.Response:
    """What the cluster-status module observes now: databases, mode, repositories."""
    reading = request.app[STATE].snapshot().cluster_status
    if reading is None:
        return _json_error(404, "the cluster-status module is not configured on this node")
    return web.Response(body=orjson.dumps(reading.as_dict()), content_type=JSON)


async def get_live(request: web.Request) -> web.Response:
    """Liveness: the event loop answers."""
    return web.Response(body=b'{"live":true}', content_type=JSON)


async def get_ready(request: web.Request) -> web.Response:
    """Readiness: 200 while the node serves, 503 while starting or shutting down."""
    ready = request.app[STATE].ready()
    return web.Response(
        status=200 if ready else 503,
        body=orjson.dumps({"ready": ready}),
        content_type=JSON,
    )


async def _authorised_body(request: web.Request) -> tuple[AdminState, AdminSettings, bytes]:
    """The admin state, the settings in force, and the body of a POST with the right secret.

    Raises:
        web.HTTPException: the refusal to answer with (no or a wrong secret, a
            body too large, too slow or undecodable).
    """
    state = request.app[STATE]
    settings = state.settings()
    _check_secret(request, settings.secret)
    return state, settings, await read_body(request, settings.limits, state.refusal_lines)


async def _continue_unless_refused(request: web.Request) -> None:
    """Answer ``Expect: 100-continue`` with the refusal when the headers already earn one.

    Not ``100 Continue`` and then 401, 403 or 413: the client would upload a
    body only to have it refused (RFC 9110 has the server send the final
    status instead). Runs before the middlewares, so it checks the network too.

    Raises:
        web.HTTPException: the refusal, closing the connection (no body follows).
    """
    state = request.app[STATE]
    settings = state.settings()
    limit = settings.limits.admin_body_bytes
    try:
        _check_network(request)
        _check_secret(request, settings.secret)
        if (request.content_length or 0) > limit:
            raise body_too_large(request, limit, state.refusal_lines)
    except web.HTTPException as refused:
        refused.force_close()
        raise
    # aiohttp's own answer from here: 100 Continue (417 for another expectation).
    await _default_expect_handler(request)


def _check_secret(request: web.Request, secret: Secret | None) -> None:
    """Refuse a POST without the configured shared secret (when one is configured)."""
    if secret is None:
        return
    offered = request.headers.get("Authorization", "")
    if not offered.startswith("Bearer "):
        raise refusal(
            web.HTTPUnauthorized,
            "this relay requires 'Authorization: Bearer <secret>'",
            headers={"WWW-Authenticate": 'Bearer realm="relay"'},
        )
    if not secret.matches(offered.removeprefix("Bearer ")):
        _log_refusal(request, "secret", "refused a POST from %s: wrong shared secret")
        raise refusal(web.HTTPForbidden, "wrong shared secret")


def _log_refusal(request: web.Request, kind: str, message: str, *args: object) -> None:
    """Log a refused request through the admin port's ``RefusalLines``; the client first."""
    log_refusal(request.app[STATE].refusal_lines, kind, message, request.remote, *args)


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=error_text(message), content_type=JSON, headers=headers)


async def _add_slash(request: web.Request) -> web.Response:
    """Redirect ``/page`` to ``/page/``, keeping the query as it came.

    Encoded, not decoded: ``?next=a%23b`` must not come back as ``?next=a#b``,
    a query cut short by a fragment.
    """
    _, mark, query = request.raw_path.partition("?")
    raise web.HTTPPermanentRedirect(location=request.path + "/" + (mark + query if query else ""))


#: Headers of aiohttp's own refusals worth keeping on the JSON ones (405's Allow, 401's...).
_KEPT_HEADERS = ("Allow", "WWW-Authenticate")


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error in JSON: aiohttp's own 404s and 405s, and failures nobody foresaw.

    The latter is relay's bug, not the client's: it is logged once with its
    traceback, and the client gets a plain 500 without details.
    """
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == JSON:
            raise
        headers = {name: exc.headers[name] for name in _KEPT_HEADERS if name in exc.headers}
        return _json_error(exc.status, _describe(request, exc), headers)
    except Exception:
        log.exception("error while answering %s %s", request.method, request.path)
        return _json_error(500, "internal error; the node's log has the details")


def _describe(request: web.Request, exc: web.HTTPException) -> str:
    """Plain words for one of aiohttp's own refusals."""
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"{request.method} is not allowed on {request.path}; use {allowed}"
    if isinstance(exc, web.HTTPNotFound):
        return f"nothing here: {request.path}"
    return exc.reason


@web.middleware
async def _network_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer 403 to clients outside ``allowed_networks`` (when any are configured)."""
    _check_network(request)
    return await handler(request)


def _check_network(request: web.Request) -> None:
    """Refuse a client outside ``allowed_networks`` (when any are configured)."""
    allowed = request.app[STATE].settings().allowed_networks
    if allowed:
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(
                request.remote or ""
            )
        except ValueError:
            address = None
        if address is None or not any(address in network for network in allowed):
            _log_refusal(request, "network", "refused %s: not in allowed_networks")
            raise refusal(web.HTTPForbidden, "this address may not use the admin port")
