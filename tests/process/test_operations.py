"""Operating relay: systemd units and notifications, reload, metrics, health, JSON logs."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.config import parse_config
from relay.errors import StartupError
from relay.node.node import Node
from relay.process.systemd import Notifier
from tests.support import (
    WAIT,
    Admin,
    Browser,
    RelayProcess,
    eventually,
    free_ports,
    local_config,
    notification,
)

StartNode = Callable[..., Awaitable[Node]]
UNITS = Path(__file__).parent.parent.parent / "systemd"


@pytest.mark.parametrize("unit", ["relay.service", "relay@node1.service"])
def test_units_pass_systemd_analyze_verify(tmp_path: Path, unit: str) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: install Debian's systemd package"
    # The units run /opt/relay/bin/relay (README's install); verify them against this one.
    relay = Path(sys.executable).parent / "relay"
    for name in ("relay.service", "relay@.service"):
        text = (UNITS / name).read_text().replace("/opt/relay/bin/relay", str(relay))
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize(
    "drop_ins", [("handoff.conf",), ("fdstore.conf",), ("handoff.conf", "fdstore.conf")]
)
def test_the_drop_ins_pass_systemd_analyze_verify(
    tmp_path: Path, drop_ins: tuple[str, ...]
) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: install Debian's systemd package"
    relay = Path(sys.executable).parent / "relay"
    drop_in_dir = tmp_path / "relay.service.d"
    drop_in_dir.mkdir()
    for name in ("relay.service", *(f"relay.service.d/{drop_in}" for drop_in in drop_ins)):
        text = (UNITS / name).read_text().replace("/opt/relay/bin/relay", str(relay))
        (tmp_path / name).write_text(text)
    # The unit path makes verify read the drop-in beside the unit (a bad key in it is reported).
    environ = {**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"}
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / "relay.service")],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=environ,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    (drop_in_dir / "broken.conf").write_text("[Service]\nExecReloadd=/bin/true\n")
    broken = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / "relay.service")],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=environ,
    )
    assert "Unknown key 'ExecReloadd'" in broken.stderr  # the drop-ins were read


def test_notifier_speaks_to_abstract_and_path_sockets(tmp_path: Path) -> None:
    for address in (str(tmp_path / "notify"), f"@relay-test-{os.getpid()}"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind("\0" + address[1:] if address.startswith("@") else address)
            listener.settimeout(WAIT)
            notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "4000000"})
            assert notifier.watchdog_interval == 2.0
            notifier.ready("serving")
            assert listener.recv(1024) == b"READY=1\nSTATUS=serving"
            notifier.ready("taken over", main_pid=4242)  # an upgrade: systemd follows the pid
            assert listener.recv(1024) == b"MAINPID=4242\nREADY=1\nSTATUS=taken over"
            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            notifier.reloading()
            reloading, stamp = listener.recv(1024).decode().split("\n")
            # systemd 253+ (Type=notify-reload) wants when, on CLOCK_MONOTONIC.
            assert reloading == "RELOADING=1"
            assert stamp.startswith("MONOTONIC_USEC=")
            after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            assert before <= int(stamp.removeprefix("MONOTONIC_USEC=")) <= after
    Notifier({}).ready("not under systemd: nothing is sent, nothing fails")
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_relay_tells_systemd_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(WAIT)
        config = tmp_path / "relay.json"
        config.write_bytes(orjson.dumps(local_config()))
        os.environ["NOTIFY_SOCKET"] = address
        os.environ["WATCHDOG_USEC"] = "200000"  # a ping every 0.1 s
        try:
            relay = RelayProcess(config).start()
        finally:
            del os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"]
        relay.follow_log()
        seen = [listener.recv(1024).decode() for _ in range(3)]
        assert seen[0].startswith("READY=1\nSTATUS=serving browsers on 127.0.0.1:")
        assert "WATCHDOG=1" in seen[1:]
        relay.signal(signal.SIGTERM)
        while (message := listener.recv(1024).decode()) == "WATCHDOG=1":
            pass
        assert message == "STOPPING=1"
        assert relay.wait()[0] == 0


async def test_a_sighup_while_stopping_is_no_reload(tmp_path: Path) -> None:
    """A SIGHUP (logrotate's, say) during the drain does not tell systemd READY=1 again."""
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(WAIT)
        config = tmp_path / "relay.json"
        # One browser closed over a long drain keeps the node stopping for a while.
        shutdown = {"drain_seconds": 30, "drain_min_rate": 0.05}
        config.write_bytes(orjson.dumps(local_config(shutdown=shutdown)))
        os.environ["NOTIFY_SOCKET"] = address
        try:
            relay = RelayProcess(config).start()
        finally:
            del os.environ["NOTIFY_SOCKET"]
        lines = relay.follow_log()
        assert listener.recv(1024).startswith(b"READY=1")
        browser = await Browser.open(relay.client_ports[0])
        relay.signal(signal.SIGTERM)
        assert listener.recv(1024) == b"STOPPING=1"
        relay.signal(signal.SIGHUP)

        async def told() -> bool:
            return any("SIGHUP while stopping" in line for _, line in lines)

        await eventually(told, "the stopping node said it takes no reload")
        await browser.close()  # the drain has no one left to wait for
        assert relay.wait()[0] == 0
        listener.settimeout(0)
        with pytest.raises(BlockingIOError):
            listener.recv(1024)  # neither RELOADING=1 nor READY=1 came after STOPPING=1


@pytest.mark.slow
async def test_reload_adds_a_peer_and_changes_a_limit_without_dropping_anyone(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    ports = free_ports(2)
    base = {
        "servers": [
            {"type": "client", "port": ports[0], "listen": "127.0.0.1"},
            {"type": "admin", "port": ports[1], "listen": "127.0.0.1"},
        ]
    }
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(base))
    node = await asyncio.to_thread(RelayProcess(path).start)
    log = node.follow_log()
    peer_path = tmp_path / "peer.json"
    peer_path.write_bytes(orjson.dumps(local_config()))
    peer = await asyncio.to_thread(RelayProcess(peer_path).start)
    browsers: list[Browser] = []
    try:
        for start in range(0, 100, 25):
            browsers += await asyncio.gather(
                *(Browser.open(ports[0]) for _ in range(start, start + 25))
            )
        await asyncio.gather(*(b.subscribe("PHID-ALL") for b in browsers))
        far = await Browser.open(peer.client_ports[0])
        await far.subscribe("PHID-ALL")

        async def reloaded(count: int) -> None:
            async def done() -> bool:
                return sum("configuration reloaded" in line for _, line in log) >= count

            await eventually(done, "the node logged the reload")

        # A peer added and a limit lowered, by SIGHUP.
        new = {
            **base,
            "cluster": [{"host": "127.0.0.1", "port": peer.admin_ports[0], "protocol": "http"}],
            "limits": {"max_subscriptions": 2},
        }
        path.write_bytes(orjson.dumps(new))
        node.signal(signal.SIGHUP)
        await reloaded(1)
        admin = Admin(session, ports[1])
        assert (await admin.post(notification("PHID-ALL", unique_id="after-reload")))[0] == 200
        everyone = await asyncio.gather(*(b.drain() for b in browsers))
        assert all([m["uniqueID"] for m in got] == ["after-reload"] for got in everyone)
        assert (await admin.status())["clients.active"] == 100  # nobody was dropped
        received: list[dict[str, Any]] = []

        async def peer_got_it() -> bool:
            received.extend(await far.drain())
            return bool(received)

        await eventually(peer_got_it, "the new peer received the message")
        assert received[0]["uniqueID"] == "after-reload"
        limited = await Browser.open(ports[0])
        await limited.subscribe("K1", "K2", "K3")
        for key in ("K1", "K3"):
            await admin.post(notification(key, n=key))
        assert [m["n"] for m in await limited.drain()] == ["K1"]
        await limited.close()

        # A broken config is refused; the node keeps serving on the old one.
        path.write_text('{"servers": [], "bogus": true}')
        node.signal(signal.SIGHUP)

        async def refused() -> bool:
            return any("reload refused" in line for _, line in log)

        await eventually(refused, "the broken config was refused")
        assert (await admin.post(notification("PHID-ALL", unique_id="still-here")))[0] == 200
        assert [m["uniqueID"] for m in await browsers[0].drain()] == ["still-here"]
        refusal = next(line for _, line in log if "reload refused" in line)
        assert "relay.json: bogus: is not a known setting" in refusal
        await far.close()
    finally:
        await asyncio.gather(*(b.close() for b in browsers))
        node.kill()
        peer.kill()


async def test_metrics_parse_and_move_with_traffic(
    node: Node, admin: Admin, open_browser: Callable[..., Awaitable[Browser]]
) -> None:
    async def scrape() -> dict[str, float]:
        async with admin.session.get(admin.base + "/metrics") as response:
            assert response.status == 200
            assert response.content_type == "text/plain"
            text = await response.text()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}"] = sample.value
        return samples

    before = await scrape()
    browser = await open_browser("/~acme/")
    await browser.subscribe("A", "B")
    for n in range(3):
        await admin.post(notification("A", n=n), instance="acme")
    received = await browser.drain()
    after = await scrape()
    assert after["relay_browser_connections{}"] == before["relay_browser_connections{}"] + 1
    assert after["relay_subscriptions{}"] == 2
    assert after["relay_messages_in_total{instance=acme}"] == 3
    assert after["relay_messages_out_total{instance=acme}"] == 3
    assert after["relay_browser_handshakes_total{instance=acme}"] == 1
    assert after["relay_history_messages{instance=acme}"] == 3
    # The frames kept: each message's JSON and its header (RFC 6455: 2 bytes under 126
    # bytes of payload, 4 bytes up to 64 KiB).
    sizes = [len(orjson.dumps(message)) for message in received]
    assert len(sizes) == 3
    assert max(sizes) < 65536
    frames = sum(size + (2 if size < 126 else 4) for size in sizes)
    assert after["relay_history_bytes{}"] == frames
    assert after["relay_delivery_latency_seconds_count{}"] == 3


async def test_health_endpoints(node: Node, admin: Admin) -> None:
    async with admin.session.get(admin.base + "/health/live") as response:
        assert response.status == 200
    async with admin.session.get(admin.base + "/health/ready") as response:
        assert response.status == 200
    node.ready = False  # what stop() does first, so balancers drain the node
    async with admin.session.get(admin.base + "/health/ready") as response:
        assert response.status == 503
        assert await response.json() == {"ready": False}


def test_json_log_mode_writes_one_object_per_line(tmp_path: Path) -> None:
    config = tmp_path / "relay.json"
    config.write_bytes(orjson.dumps(local_config(log_format="json")))
    relay = RelayProcess(config).start()

    async def unusable_frame() -> None:
        browser = await Browser.open(relay.client_ports[0], "/~acme/")
        await browser.ws.send("not json")
        await browser.sync()
        await browser.close()

    asyncio.run(unusable_frame())
    relay.signal(signal.SIGTERM)
    _, output = relay.wait()
    records = [orjson.loads(line) for line in output.splitlines() if line.strip()]
    assert len(records) >= 4
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
    frame = next(r for r in records if "unusable frame" in r["message"])
    assert frame["instance"] == "acme"
    assert frame["client"] == "127.0.0.1"
    assert frame["level"] == "INFO"


async def test_a_reload_that_cannot_be_applied_changes_nothing(
    start_node: StartNode, tmp_path: Path
) -> None:
    node = await start_node(local_config(limits={"max_subscriptions": 5}))
    broken_peer = {
        "host": "127.0.0.1",
        "port": 1,
        "protocol": "https",
        "ca_file": str(tmp_path / "no.pem"),
    }
    new = parse_config(local_config(limits={"max_subscriptions": 2}, cluster=[broken_peer]))
    with pytest.raises(StartupError, match=r"cluster\[0\]\.ca_file: cannot load the CA file"):
        await node.apply(new)
    assert node.config.limits.max_subscriptions == 5
    assert node.hub._limits.max_subscriptions == 5
    assert node.admin_state.settings().limits.max_subscriptions == 5
    assert node.peers.links == []


def test_a_bad_peer_ca_file_stops_serve_with_a_clear_message(tmp_path: Path) -> None:
    config = local_config(peering={"ca_file": str(tmp_path / "missing-ca.pem")})
    config["cluster"] = [{"host": "127.0.0.1", "port": 1, "protocol": "https"}]
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(config))
    result = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 1
    assert "peering.ca_file: cannot load the CA file" in result.stderr
    assert "Traceback" not in result.stderr


async def test_debug_logging_keeps_a_browsers_cookie_and_credentials_out(tmp_path: Path) -> None:
    """--debug shows relay's own detail, never the handshake's headers or the frames' content.

    websockets' own DEBUG lines quote every header a browser sends (its
    Phorge session cookie among them) and every frame.
    """
    config = tmp_path / "relay.json"
    config.write_bytes(orjson.dumps(local_config()))
    node = await asyncio.to_thread(RelayProcess(config, ["--debug"]).start)
    lines = node.follow_log()
    try:
        headers = {"Cookie": "phsid=SESSION-SECRET-1", "Authorization": "Basic U0VDUkVULTI="}
        browser = await Browser.open(node.client_ports[0], additional_headers=headers)
        await browser.subscribe("PHID-A")
        await browser.close()

        async def disconnected() -> bool:
            return any("disconnected" in line for _, line in lines)

        await eventually(disconnected, "relay logs the browser leaving, at DEBUG")
    finally:
        node.signal(signal.SIGTERM)
        _, output = await asyncio.to_thread(node.wait)
    assert " DEBUG relay.browser: browser 127.0.0.1 connected" in output
    for secret in ("SESSION-SECRET-1", "U0VDUkVULTI="):
        assert secret not in output


async def test_two_reloads_in_a_row_end_on_the_newer_file(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    peer_path = tmp_path / "peer.json"
    peer_path.write_bytes(orjson.dumps(local_config()))
    peer = await asyncio.to_thread(RelayProcess(peer_path).start)
    # Long peer timeouts: a post to the stopped peer stays in flight for the whole test.
    peering = {"timeout_seconds": 30}
    cluster = [{"host": "127.0.0.1", "port": peer.admin_ports[0], "protocol": "http"}]
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(local_config(cluster=cluster, peering=peering)))
    node = await asyncio.to_thread(RelayProcess(path).start)
    log = node.follow_log()
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    try:
        admin = Admin(session, node.admin_ports[0])
        assert (await admin.post(notification("PHID-UP")))[0] == 200

        async def peer_up() -> bool:
            return bool((await admin.status())["cluster"][0]["state"] == "up")

        await eventually(peer_up, "the link to the peer is up")
        # A post the stopped peer never answers: removing its link waits for it (1 s).
        peer.signal(signal.SIGSTOP)
        assert (await admin.post(notification("PHID-STUCK")))[0] == 200

        def logged(text: str) -> Callable[[], Awaitable[bool]]:
            async def count() -> bool:
                return any(text in line for _, line in log)

            return count

        path.write_bytes(orjson.dumps(local_config(peering=peering, logs=[{"path": str(first)}])))
        node.signal(signal.SIGHUP)
        await eventually(logged("received SIGHUP"), "the first reload began")
        path.write_bytes(orjson.dumps(local_config(peering=peering, logs=[{"path": str(second)}])))
        node.signal(signal.SIGHUP)

        async def both_reloaded() -> bool:
            return sum("configuration reloaded" in line for _, line in log) == 2

        await eventually(both_reloaded, "both reloads ended")
        # A line logged now goes where the newer file says.
        browser = await Browser.open(node.client_ports[0])
        await browser.ws.send("not a command")
        await browser.sync()
        await browser.close()
        await eventually(logged("unusable frame"), "the node logged the bad frame")
    finally:
        peer.signal(signal.SIGCONT)
        node.kill()
        peer.kill()
    assert "unusable frame" in second.read_text()
    assert "unusable frame" not in first.read_text()
