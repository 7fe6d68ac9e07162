"""An alert webhook of the test's own (aiohttp on port 0), and reading a node's /metrics."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import aiohttp
import orjson
from aiohttp import web


class Receiver:
    """The webhook: keeps every alert; ``hang`` makes it accept and never answer."""

    def __init__(self, hang: bool = False) -> None:
        self.alerts: list[tuple[dict[str, str], bytes]] = []
        self.requests = 0
        self.hang = hang
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.hang:
            await asyncio.Event().wait()
        self.alerts.append((dict(request.headers), await request.read()))
        return web.Response(status=204)


async def serve(receiver: Receiver, runners: list[web.AppRunner]) -> Receiver:
    """Serve ``receiver`` on a port of its own; ``runners`` stops it."""
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    runners.append(runner)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    return receiver


def signed_alerts(receiver: Receiver, secret: str, kind: str) -> list[dict[str, Any]]:
    """The alerts of ``kind`` received so far, each checked for its signature with ``secret``."""
    found = []
    for headers, body in receiver.alerts:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Relay-Signature"] == "sha256=" + expected
        alert = orjson.loads(body)
        if alert["kind"] == kind:
            found.append(alert)
    return found


async def metric(session: aiohttp.ClientSession, node: Any, name: str) -> float:
    """The value of the sample ``name`` (no labels) in ``node``'s /metrics."""
    async with session.get(node.admin_url + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")
