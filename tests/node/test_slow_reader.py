"""A browser that stops reading keeps its connection through a handoff and a restart.

When relay lets go of a connection, part of what it sent a slow reader (a
phone on a bad link, a tab whose kernel buffers are full) may still be in
relay's own process: the kernel took no more. Those bytes go with the
connection, and the next process writes them first: the browser reads on,
one unbroken stream of frames, every post once and in order, no close.

Real processes, real sockets: the browser is a raw socket with a small
receive buffer (:class:`~tests.node.slow_reader.SlowReader`), relay's send
buffer is small too, and far more is posted than the two kernels hold.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.harness.cluster import Cluster, Relays
from tests.harness.fdstore import FakeSystemd
from tests.harness.node import RelayNode
from tests.node.handoff_parts import read_status
from tests.node.slow_reader import SlowReader
from tests.support import WAIT, local_config, notification

#: Posts while the browser does not read, each over ``FILLER`` bytes: ~120 KiB in all,
#: many times what the kernels hold for it, well under ``outbound_buffer_bytes`` (1 MiB).
POSTS = 60
FILLER = "x" * 2000
#: Relay's kernel send buffer per browser (the kernel doubles it).
SEND_BUFFER = 4096


def _config() -> dict[str, object]:
    limits = {"max_connections_per_ip": 0, "socket_send_buffer_bytes": SEND_BUFFER}
    return local_config(limits=limits)


async def _post_all(port: int, ids: list[str]) -> None:
    """Post one message to ``K`` per id, each answered before the next."""
    async with aiohttp.ClientSession() as session:
        for unique in ids:
            body = orjson.dumps(notification("K", unique_id=unique, filler=FILLER))
            async with session.post(f"http://127.0.0.1:{port}/", data=body) as response:
                assert response.status == 200


def _relay_holds_some(reader: SlowReader) -> None:
    """What was posted does not fit in the kernels: relay's process holds the rest."""
    in_kernels = reader.queued() + reader.relay_send_queue()
    assert POSTS * len(FILLER) > 2 * in_kernels, in_kernels


def _ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{index}" for index in range(count)]


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_handoff_moves_a_slow_reader_with_what_it_is_owed(
    relays: Relays, tmp_path: Path
) -> None:
    handoff = str(tmp_path / "handoff.sock")
    old = RelayNode(
        "old", tmp_path / "old", _config(), host="127.0.0.1", args=("--handoff-socket", handoff)
    )
    relays.clusters.append(Cluster("mesh", [old]))  # stopped at the end of the test
    old.start()
    reader = await SlowReader.open(old.client_port)
    before, after = _ids("m", POSTS), _ids("n", 5)
    await _post_all(old.admin_port, before)
    _relay_holds_some(reader)
    args = ("--handoff-socket", handoff, "--take-over")
    new = RelayNode("new", tmp_path / "new", _config(), host="127.0.0.1", args=args)
    relays.clusters.append(Cluster("mesh", [new]))
    await asyncio.to_thread(new.start)
    assert await asyncio.to_thread(old.wait) == 0
    await _post_all(new.admin_port, after)  # the same port: the new process serves it
    assert await reader.read_until(after[-1]) == before + after
    assert reader.closed is None
    assert "handoff done: 1 browser connections moved" in old.log
    assert (await read_status(new.admin_port))["process"]["adopted"] == 1
    reader.close()


async def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(process.wait, 2 * WAIT)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_restart_keeps_a_slow_reader_with_what_it_is_owed(
    systemd: FakeSystemd, tmp_path: Path
) -> None:
    config = tmp_path / "relay.json"
    config.write_bytes(orjson.dumps(_config()))
    first = systemd.start("--config", str(config))
    ports = await systemd.ready()
    reader = await SlowReader.open(ports["client"])
    before, after = _ids("m", POSTS), _ids("n", 5)
    await _post_all(ports["admin"], before)
    _relay_holds_some(reader)
    assert await _stop(first) == 0
    second = systemd.start("--config", str(config))
    assert await systemd.ready() == ports
    await _post_all(ports["admin"], after)
    assert await reader.read_until(after[-1]) == before + after
    assert reader.closed is None
    assert "1 browser connections and 2 listeners kept" in systemd.log(0)
    assert (await read_status(ports["admin"]))["process"]["adopted"] == 1
    reader.close()
    assert await _stop(second) == 0
