"""An echo server for Autobahn|Testsuite, made of relay's real node and browser connections.

Autobahn's fuzzing client needs a server that echoes every message. relay's
client listener does not echo: browsers send JSON commands. So this harness
starts a real relay ``Node`` (real config, listeners, admission, liveness
sweep, hub) whose client listener builds ``EchoConnection``, a subclass of
``relay.listeners.browser.BrowserConnection`` that changes one thing: a complete message
is sent back. Everything the test suite exercises stays relay's own code over
websockets' sans-I/O handshake and frame codec: the handshake, frame parsing and validation,
reassembly of fragmented text, UTF-8 checking (relay's ``_on_text`` fails the
connection with 1007 before anything is echoed), pings, the closing handshake
and ``_flush``, which writes what the protocol produced and closes the socket.

Binary messages are the harness's own: relay ignores them by design, so the
subclass reassembles and echoes them itself.

Run it with relay's virtualenv; it prints the server's URL on stdout once the
listener is bound, then serves until SIGTERM or SIGINT::

    .venv/bin/python autobahn/echo_server.py [--port PORT | --config FILE]

Without ``--config`` it listens on 127.0.0.1 (client port ``--port``, default
0: the OS picks) with relay's default limits, those of a production node
whose config has no ``limits`` section.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from websockets.frames import Frame, Opcode
from websockets.protocol import State

from relay.config import Config, load_config, parse_config
from relay.errors import RelayError
from relay.listeners.browser import BrowserConnection, ConnectionContext
from relay.node.node import Node
from relay.process.loop import run


def loopback(port: int) -> dict[str, object]:
    """A node on loopback only; every setting but the listeners is relay's default."""
    return {
        "servers": [
            {"type": "client", "port": port, "listen": "127.0.0.1"},
            {"type": "admin", "port": 0, "listen": "127.0.0.1"},
        ]
    }


class EchoConnection(BrowserConnection):
    """A browser connection that sends every complete message back."""

    __slots__ = ("_binary",)

    def __init__(self, listener: ConnectionContext) -> None:
        """A connection like relay's, with a buffer for binary fragments."""
        super().__init__(listener)
        self._binary: bytearray | None = None

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.BINARY or (opcode is Opcode.CONT and self._binary is not None):
            self._on_binary_frame(frame)
        else:
            super()._on_frame(frame)

    def _on_text(self, data: bytes | bytearray | memoryview) -> None:
        # relay's own handling first: it checks the UTF-8 (failing the connection
        # with 1007) and tries the text as a command, which for Autobahn's payloads
        # is logged and ignored. Whatever leaves the connection open is echoed.
        super()._on_text(data)
        if self._ws is not None and self._ws.state is State.OPEN:
            self._ws.send_text(bytes(data))

    def _on_binary_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.BINARY:
            self._binary = bytearray(frame.data)
        else:
            assert self._binary is not None
            self._binary += frame.data
        if frame.fin:
            data, self._binary = bytes(self._binary), None
            if self._ws is not None and self._ws.state is State.OPEN:
                self._ws.send_binary(data)


async def serve(config: Config) -> None:
    """Run a node whose browsers are echoed, until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    node = Node(config, connection_factory=EchoConnection)
    await node.start()
    try:
        host, port = node.client_addresses[0]
        print(f"ws://{host}:{port}", flush=True)
        await stop.wait()
    finally:
        await node.stop()


def main() -> int:
    """Parse the command line and serve; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--port", type=int, default=0, help="client port on 127.0.0.1 (0: any)")
    choice.add_argument("--config", help="a relay config file instead (its first client listener)")
    args = parser.parse_args()
    # Autobahn's payloads are not commands: relay logs each at INFO. Keep real problems only.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.config:
            config = load_config(args.config)
        else:
            config = parse_config(loopback(args.port), "loopback")
        run(serve(config))
    except RelayError as exc:
        print(f"echo_server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
