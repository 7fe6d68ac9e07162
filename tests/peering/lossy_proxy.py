"""A TCP proxy that makes a link slow and lossy, for the mesh's network tests.

netem does not exist on the kernels relay is tested on, so delay and loss are
added here, per chunk of data forwarded: every chunk waits ``--delay``
seconds; with probability ``--stall`` it waits ``--stall-seconds`` more (what
a lost segment costs TCP: a retransmission timeout); with probability
``--reset`` the connection is cut both ways (what a lost link costs: the
request fails, and its answer may be lost after the peer acted on it).

    python lossy_proxy.py --route 127.0.0.1:23001=198.18.0.2:22281 [--route ...]

Prints ``ready`` once every route listens; runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import random


async def pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    other: asyncio.StreamWriter,
    args: argparse.Namespace,
    rng: random.Random,
) -> None:
    try:
        while chunk := await reader.read(65536):
            await asyncio.sleep(args.delay)
            if rng.random() < args.stall:
                await asyncio.sleep(args.stall_seconds)
            if rng.random() < args.reset:
                writer.transport.abort()
                other.transport.abort()
                return
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
    except (ConnectionError, OSError, RuntimeError):
        writer.transport.abort()
        other.transport.abort()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--route", action="append", required=True, help="LISTEN=TARGET")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--stall", type=float, default=0.0)
    parser.add_argument("--stall-seconds", type=float, default=0.2)
    parser.add_argument("--reset", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    servers = []
    for route in args.route:
        listen, target = route.split("=")
        listen_host, listen_port = listen.rsplit(":", 1)
        target_host, target_port = target.rsplit(":", 1)

        async def serve(
            client_reader: asyncio.StreamReader,
            client_writer: asyncio.StreamWriter,
            host: str = target_host,
            port: int = int(target_port),
        ) -> None:
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
            except OSError:
                client_writer.transport.abort()
                return
            await asyncio.gather(
                pump(client_reader, upstream_writer, client_writer, args, rng),
                pump(upstream_reader, client_writer, upstream_writer, args, rng),
            )
            client_writer.close()
            upstream_writer.close()

        servers.append(await asyncio.start_server(serve, listen_host, int(listen_port)))
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
