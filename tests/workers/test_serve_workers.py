"""``relay serve --workers 2``: real supervisor and worker processes on shared ports."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import trustme
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Relays, children_of, run_serve
from tests.redis_harness import RedisServer
from tests.support import eventually, free_ports, local_config

pytestmark = pytest.mark.slow


def tls_files(tmp_path: Path) -> tuple[dict[str, str], ssl.SSLContext]:
    """A server certificate's config entries, and a client context that trusts it."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return {"ssl.key": str(key), "ssl.cert": str(cert)}, context


async def status_over_fresh_connections(
    port: int, context: ssl.SSLContext, *, tries: int
) -> list[dict[str, Any]]:
    """``/status/`` asked ``tries`` times, each on a new connection (so any worker may answer)."""
    answers = []
    connector = aiohttp.TCPConnector(force_close=True, ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(tries):
            async with session.get(f"https://127.0.0.1:{port}/status/") as reply:
                assert reply.status == 200
                answers.append(await reply.json())
    return answers


async def test_workers_share_tls_ports_and_every_answer_describes_the_whole_node(
    tmp_path: Path, redis_server: RedisServer, relays: Relays
) -> None:
    files, context = tls_files(tmp_path)
    cluster = relays.broker(1, redis_server.url, workers=2, args=("--debug",))
    for server in cluster[0].config["servers"]:
        server.update(files)
    [node] = await cluster.start()
    browsers = [
        await websockets.connect(f"wss://127.0.0.1:{node.client_port}/", ssl=context)
        for _ in range(16)
    ]
    try:

        async def all_counted() -> bool:
            answer = await status_over_fresh_connections(node.admin_port, context, tries=1)
            return bool(answer[0]["clients.active"] == 16)

        await eventually(all_counted, "the node counts every browser")
        answers = await status_over_fresh_connections(node.admin_port, context, tries=30)
        # Different workers answered (their own fingerprints), all with the node's figures.
        assert len({answer["fingerprint"] for answer in answers}) == 2
        for answer in answers:
            assert answer["clients.active"] == 16
            assert answer["clients.total"] == 16
            workers = answer["workers"]
            assert [worker["state"] for worker in workers] == ["serving", "serving"]
            # The kernel spread the browsers over both workers.
            assert sum(worker["connections"] for worker in workers) == 16
            assert all(worker["connections"] > 0 for worker in workers)
            assert {worker["pid"] for worker in workers} == children_of(node.pid)

        connector = aiohttp.TCPConnector(ssl=context)
        async with aiohttp.ClientSession(connector=connector) as session:
            url = f"https://127.0.0.1:{node.admin_port}/metrics"
            async with session.get(url) as reply:
                text = await reply.text()
        metrics = {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        assert metrics["relay_browser_connections"] == 16
        assert metrics["relay_workers"] == 2
        assert metrics["relay_workers_answering"] == 2
    finally:
        await asyncio.gather(*(browser.close() for browser in browsers))


def test_supervisor_holds_the_pidfile_forwards_reloads_and_stops_its_workers(
    tmp_path: Path, redis_server: RedisServer, relays: Relays
) -> None:
    pidfile = tmp_path / "relay.pid"
    # A watchdog ping every 0.1 s, from the supervisor (its workers ping it, not systemd).
    [node] = relays.broker(
        1, redis_server.url, workers=2, env={"WATCHDOG_USEC": "200000"}, pidfile=str(pidfile)
    ).start_blocking()
    config = node.config
    node.next_notice(lambda text: text == "WATCHDOG=1")
    assert pidfile.read_text().strip() == str(node.pid)
    workers = children_of(node.pid)
    assert len(workers) == 2

    node.signal(signal.SIGHUP)
    node.next_notice(lambda text: text.startswith("RELOADING=1\nMONOTONIC_USEC="))
    node.next_notice(lambda text: text.startswith("READY=1"))
    # READY comes only once both workers have reloaded.
    node.wait_for_log(r"\[worker \d\]: configuration reloaded", count=2)
    assert children_of(node.pid) == workers  # reloaded in place, not restarted

    # A new worker count takes a restart; a broken file is refused, and nothing stops.
    node.config_path.write_bytes(orjson.dumps({**config, "workers": 3}))
    node.signal(signal.SIGHUP)
    node.next_notice(lambda text: text.startswith("READY=1"))
    assert "reload: workers changed: the number of workers changes with a restart" in node.log
    node.config_path.write_text("{not json")
    node.signal(signal.SIGHUP)
    node.wait_for_log(
        r"relay.cli: reload refused, the running configuration stays: .*not valid JSON"
    )
    assert children_of(node.pid) == workers

    node.signal(signal.SIGTERM)
    node.next_notice(lambda text: text == "STOPPING=1")
    assert node.wait() == 0
    assert not pidfile.exists()
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "Traceback" not in node.log


def test_a_file_no_worker_could_start_on_is_refused_before_any_worker_starts(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    config = local_config(broker={"url": redis_server.url})
    config["servers"][0].update({"ssl.key": str(tmp_path / "no.key"), "ssl.cert": "/nonexistent"})
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(config))
    result = run_serve("--config", str(path), "--workers", "2")
    assert result.returncode == 1
    # check-config's own line, before the supervisor starts a worker to find it out.
    assert result.stderr.splitlines() == [
        f"relay: {path}: servers[0]: cannot load TLS files (ssl.cert /nonexistent, "
        f"ssl.key {tmp_path}/no.key): No such file or directory"
    ]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--workers", "0"], "relay: --workers 0: give a number from 1 to 256"),
        (["--workers", "2"], "relay: --workers 2: workers meet through a broker; give a --config"),
    ],
)
def test_a_bad_workers_flag_is_refused_before_anything_starts(
    args: list[str], expected: str
) -> None:
    result = run_serve(*args)
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_a_reload_that_moves_a_listener_says_it_waits_for_a_restart(
    redis_server: RedisServer, relays: Relays
) -> None:
    [node] = relays.broker(1, redis_server.url, workers=2).start_blocking()
    [elsewhere] = free_ports(1)
    moved = orjson.loads(node.config_path.read_bytes())
    moved["servers"][0]["port"] = elsewhere
    node.config_path.write_bytes(orjson.dumps(moved))
    node.signal(signal.SIGHUP)
    node.next_notice(lambda text: text.startswith("READY=1"))
    node.wait_for_log(r"\[worker \d\]: configuration reloaded", count=2)
    assert (
        "relay.cli: reload: servers[0].port changed: listeners keep their old ports until a restart"
    ) in node.log
