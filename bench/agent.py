"""The command loop of a load-generator process (``bench.workers``, ``bench.joiner``).

The process sets up (connects), reports what ``setup`` returned down the
pipe, then answers each command with what ``handle`` returns until
``close`` (or the coordinator going away), and tears down.
"""

from __future__ import annotations

import asyncio
import os
from multiprocessing.connection import Connection
from typing import Any


class Agent:
    """The command loop every role shares; a role defines setup, handle and teardown."""

    def __init__(self, conn: Connection, spec: dict[str, Any]) -> None:
        """Serve the coordinator at the other end of ``conn``, as ``spec`` describes."""
        self.conn = conn
        self.spec = spec
        self._commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def run(self) -> None:
        """Set up, report ready, then serve commands until ``close``."""
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._read_command)
        # uvloop made the pipe non-blocking; reports can be megabytes, so sending must block.
        os.set_blocking(self.conn.fileno(), True)
        try:
            self.conn.send(await self.setup())
            while True:
                command = await self._commands.get()
                if command["op"] == "close":
                    break
                self.conn.send(await self.handle(command))
        finally:
            loop.remove_reader(self.conn.fileno())
            self.teardown()

    def _read_command(self) -> None:
        try:
            self._commands.put_nowait(self.conn.recv())
        except EOFError:
            # The coordinator went away: stop.
            self._commands.put_nowait({"op": "close"})

    async def setup(self) -> dict[str, Any]:
        """Get ready (connect); what is returned is the ``ready`` report."""
        raise NotImplementedError

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        """Carry out one command from the coordinator; what is returned is the answer."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Release what ``setup`` took (after ``close``, or a failure)."""
        raise NotImplementedError
