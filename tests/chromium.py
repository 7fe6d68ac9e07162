"""Headless Chromium for end-to-end tests, driven over the DevTools protocol.

Only what the tests need: open a page, evaluate JavaScript in it, take a
screenshot. The protocol runs over a WebSocket, so the websockets client
relay already depends on is all it takes.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import shutil
from pathlib import Path
from typing import Any

import orjson
import websockets

from tests.support import WAIT

# The flags Debian's Chromium needs on a machine without a screen or an
# outside network: no sandbox as root, no GPU, no background fetches.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1280,900",
)


def chromium_binary() -> str:
    """The installed Chromium, or a failure that names the package to install."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("Chromium is missing: install Debian's chromium package")


class Chromium:
    """One headless browser process and its DevTools connection."""

    def __init__(self, process: asyncio.subprocess.Process, devtools: Any) -> None:
        self._process = process
        self._devtools = devtools
        self._ids = itertools.count(1)

    @classmethod
    async def launch(cls, profile: Path) -> Chromium:
        process = await asyncio.create_subprocess_exec(
            chromium_binary(),
            *FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        async with asyncio.timeout(WAIT * 3):
            while True:
                line = (await process.stderr.readline()).decode()
                if not line:
                    raise AssertionError("Chromium exited before its DevTools were ready")
                if line.startswith("DevTools listening on "):
                    url = line.removeprefix("DevTools listening on ").strip()
                    break
        # Keep draining its stderr so that a chatty browser never blocks on the pipe.
        asyncio.get_running_loop().create_task(process.stderr.read())
        devtools = await websockets.connect(url, max_size=None)
        return cls(process, devtools)

    async def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Send one DevTools command and return its result (events are skipped)."""
        ident = next(self._ids)
        command: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            command["sessionId"] = session
        await self._devtools.send(orjson.dumps(command).decode())
        async with asyncio.timeout(WAIT):
            while True:
                reply = orjson.loads(await self._devtools.recv())
                if reply.get("id") == ident:
                    if "error" in reply:
                        raise AssertionError(f"{method}: {reply['error']}")
                    return reply["result"]  # type: ignore[no-any-return]

    async def open(self, url: str) -> str:
        """Open ``url`` in a new tab; return the session that controls it."""
        target = await self.call("Target.createTarget", {"url": url})
        attached = await self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        return str(attached["sessionId"])

    async def evaluate(self, session: str, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = await self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise AssertionError(details.get("exception", {}).get("description") or details["text"])
        return result["result"].get("value")

    async def text(self, session: str) -> str:
        """What the page shows, as text."""
        return str(await self.evaluate(session, "document.body ? document.body.innerText : ''"))

    async def resize(self, session: str, width: int, height: int) -> None:
        """Give the page a window of ``width`` x ``height`` CSS pixels (at scale 1)."""
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session,
        )

    async def screenshot(self, session: str, *, full_page: bool = False) -> bytes:
        """The page as a PNG: the window, or with ``full_page`` the whole page."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = (await self.call("Page.getLayoutMetrics", {}, session))["cssContentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
            params["clip"]["scale"] = 1
        shot = await self.call("Page.captureScreenshot", params, session)
        return base64.b64decode(shot["data"])

    async def close(self) -> None:
        await self._devtools.close()
        if self._process.returncode is None:
            self._process.kill()
        await self._process.wait()
