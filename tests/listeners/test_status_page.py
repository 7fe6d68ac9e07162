"""The status page's files on the admin port: its chart library, under the page's own rules."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from importlib import resources

import aiohttp
import pytest

from relay.node.node import Node
from tests.support import local_config

StartNode = Callable[..., Awaitable[Node]]
VENDOR = resources.files("relay.observe").joinpath("static/vendor/uplot")


def base(node: Node) -> str:
    return f"http://127.0.0.1:{node.admin_addresses[0][1]}"


async def test_the_page_loads_uplot_from_the_admin_port_cached_for_good(
    node: Node, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{base(node)}/dashboard/") as response:
        assert response.status == 200
        policy = response.headers["Content-Security-Policy"]
        page = await response.text()
    # Only this port's own files and inline code; nothing from elsewhere.
    assert "default-src 'none'" in policy
    assert "script-src 'self' 'unsafe-inline'" in policy
    assert "style-src 'self' 'unsafe-inline'" in policy
    links = re.findall(r'(?:src|href)="(vendor/uplot/[^"?]+)\?v=([0-9a-f]{16})"', page)
    assert sorted(name for name, _ in links) == [
        "vendor/uplot/uPlot.iife.min.js",
        "vendor/uplot/uPlot.min.css",
    ]
    types = {"uPlot.iife.min.js": "text/javascript", "uPlot.min.css": "text/css"}
    for link, digest in links:
        name = link.rsplit("/", 1)[1]
        async with session.get(f"{base(node)}/dashboard/{link}?v={digest}") as response:
            assert response.status == 200
            assert response.content_type == types[name]
            assert response.charset == "utf-8"
            assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert await response.read() == VENDOR.joinpath(name).read_bytes()
    async with session.get(f"{base(node)}/dashboard/vendor/uplot/LICENSE") as response:
        assert response.content_type == "text/plain"
        assert "MIT" in await response.text()


@pytest.mark.parametrize("name", ["uPlot.js", "VERSION", "..", "%2E%2E%2Fdashboard.html"])
async def test_any_other_file_is_a_json_404(
    node: Node, session: aiohttp.ClientSession, name: str
) -> None:
    async with session.get(f"{base(node)}/dashboard/vendor/uplot/{name}") as response:
        assert response.status == 404
        assert "error" in await response.json()


async def test_the_files_follow_the_page_disabled_or_refused(
    start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    disabled = await start_node(local_config(dashboard={"enabled": False}))
    async with session.get(f"{base(disabled)}/dashboard/vendor/uplot/uPlot.min.css") as response:
        assert response.status == 404
        assert await response.json() == {"error": "the status page is disabled on this node"}
    elsewhere = await start_node(local_config(admin={"allowed_networks": ["10.0.0.0/8"]}))
    for path in ("/dashboard/", "/dashboard/vendor/uplot/uPlot.min.css"):
        async with session.get(f"{base(elsewhere)}{path}") as response:
            assert response.status == 403, path
