"""The relay process under fuzz: started as the tests start nodes, its log and health watched."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import uuid
from pathlib import Path

import aiohttp
import orjson
import websockets

from tests.support import WAIT, Admin, Browser, RelayProcess, local_config, rss_bytes

#: What in the node's log counts against it: a line above WARNING or any traceback.
TROUBLE = re.compile(
    r" (ERROR|CRITICAL) |Traceback|Task exception was never retrieved|Fatal error|Exception in"
)
#: The first line of a log record (text format): the rest belong to the record before.
_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
#: The canary's instance and key: nothing the fuzzer sends names them.
CANARY_INSTANCE = "fuzz-canary"
CANARY_KEY = "fuzz.canary"


class Target:
    """One ``relay serve`` process on loopback, default settings, ports picked by the OS."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "relay.json"
        config.write_bytes(orjson.dumps(local_config()))
        self.process = RelayProcess(config)
        self.lines: list[tuple[float, str]] = []
        self._checked = 0

    def start(self) -> Target:
        """Start the node and follow its log (blocking: run it in a thread)."""
        self.process.start()
        self.lines = self.process.follow_log()
        return self

    def port(self, which: str) -> int:
        """The admin or the client port."""
        ports = self.process.admin_ports if which == "admin" else self.process.client_ports
        return ports[0]

    @property
    def alive(self) -> bool:
        """Whether the process still runs."""
        proc = self.process.proc
        return proc is not None and proc.poll() is None

    def rss(self) -> int:
        """The node's resident memory in bytes (0 once it is gone)."""
        try:
            return rss_bytes(self.process.pid)
        except OSError:
            return 0

    def new_trouble(self, *, final: bool = False) -> list[tuple[float, str]]:
        """Log records that count against the node, logged since the last call.

        Each comes as one line: the record's first line and, for a traceback,
        its last (the exception). A record still being written is left for
        the next call, unless ``final``.
        """
        lines = self.lines[self._checked :]
        found = []
        at = 0
        while at < len(lines):
            end = at + 1
            while end < len(lines) and not _RECORD.match(lines[end][1]):
                end += 1
            if end == len(lines) and not final:
                break
            record = [line.rstrip() for _, line in lines[at:end]]
            if any(TROUBLE.search(line) for line in record):
                summary = record[0] if len(record) == 1 else f"{record[0]} ... {record[-1]}"
                found.append((lines[at][0], summary))
            at = end
        self._checked += at
        return found

    def stop(self) -> int:
        """Stop with SIGTERM as an operator would; returns the exit status (blocking)."""
        if self.alive:
            self.process.signal(signal.SIGTERM)
        try:
            status, _ = self.process.wait()
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = -signal.SIGKILL
        return status


class Canary:
    """A well-behaved browser and application server: the node must keep serving them."""

    def __init__(self, target: Target, session: aiohttp.ClientSession) -> None:
        self.target = target
        self.admin = Admin(session, target.port("admin"))
        self.browser: Browser | None = None

    async def delivers(self, *, fresh: bool = False) -> bool:
        """Whether a post reaches a subscribed browser (a new one when ``fresh``)."""
        try:
            async with asyncio.timeout(WAIT):
                if fresh or self.browser is None:
                    await self.close()
                    port = self.target.port("client")
                    self.browser = await Browser.open(port, f"/~{CANARY_INSTANCE}/")
                    await self.browser.subscribe(CANARY_KEY)
                unique = uuid.uuid4().hex
                body = {"subscribers": [CANARY_KEY], "key": CANARY_KEY, "uniqueID": unique}
                status, _ = await self.admin.post(body, instance=CANARY_INSTANCE)
                if status != 200:
                    return False
                while (await self.browser.recv()).get("uniqueID") != unique:
                    pass
                return True
        except (TimeoutError, OSError, aiohttp.ClientError, websockets.WebSocketException):
            await self.close()
            return False

    async def metrics_size(self) -> int:
        """Bytes of ``GET /metrics``."""
        async with self.admin.session.get(self.admin.base + "/metrics") as response:
            return len(await response.read())

    async def close(self) -> None:
        """Close the canary's browser, if open."""
        browser, self.browser = self.browser, None
        if browser is not None:
            await browser.close()
