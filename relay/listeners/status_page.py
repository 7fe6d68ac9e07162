"""The admin port's status page: ``GET /dashboard/`` and the files it loads (its charts).

What the page and the files contain comes from ``relay.observe`` through the
node, as callables on the admin state (``PageSource``), so this edge imports
no other. The files are served under the page's own rules: while the page is
enabled, to the networks the admin port admits, without the POST secret.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import orjson
from aiohttp import web


class StaticFile(Protocol):
    """A file the status page loads from the admin port."""

    @property
    def body(self) -> bytes:
        """The file's bytes."""

    @property
    def content_type(self) -> str:
        """Its media type, without a charset."""


class PageSource(Protocol):
    """Where the page and its files come from (the admin state)."""

    @property
    def dashboard(self) -> Callable[[str], bytes | None]:
        """The page for a given host name; None while the page is disabled."""

    @property
    def dashboard_enabled(self) -> Callable[[], bool]:
        """Whether the page (and so its files) is served now."""

    @property
    def dashboard_file(self) -> Callable[[str], StaticFile | None]:
        """A file the page loads, by name; None for a name it does not load."""


#: The page talks only to this node and loads only this port's files: nothing
#: else may load it or script it, and it is never cached (its figures are live).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; connect-src ws: wss:; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}

#: The page asks for each file with its digest in the query, so a new release
#: of relay brings a new URL and a file may be cached for a year.
FILE_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
}

#: Where the page loads its files from (relative to ``/dashboard/``).
FILES_PATH = "/dashboard/vendor/uplot/{name}"


def page_routes(source: Callable[[web.Request], PageSource]) -> list[web.RouteDef]:
    """The routes of the page and its files, reading them through ``source(request)``."""

    async def get_page(request: web.Request) -> web.Response:
        """The live status page, pointed at this node's client port."""
        try:
            host = request.url.host or "127.0.0.1"
        except ValueError:  # yarl's word on a Host header it cannot parse (UnicodeError too)
            raise _refusal(
                web.HTTPBadRequest, "the Host header is not a host name or a host:port"
            ) from None
        page = source(request).dashboard(host)
        if page is None:
            raise _refusal(web.HTTPNotFound, "the status page is disabled on this node")
        return web.Response(
            body=page, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
        )

    async def get_file(request: web.Request) -> web.Response:
        """A file the page loads, while the page is enabled."""
        state = source(request)
        if not state.dashboard_enabled():
            raise _refusal(web.HTTPNotFound, "the status page is disabled on this node")
        found = state.dashboard_file(request.match_info["name"])
        if found is None:
            raise _refusal(web.HTTPNotFound, f"the status page loads no such file: {request.path}")
        return web.Response(
            body=found.body,
            content_type=found.content_type,
            charset="utf-8",
            headers=FILE_HEADERS,
        )

    return [web.get("/dashboard/", get_page), web.get(FILES_PATH, get_file)]


def _refusal(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    """An HTTP error of class ``kind`` whose body is ``{"error": message}``, as every refusal."""
    return kind(text=orjson.dumps({"error": message}).decode(), content_type="application/json")
