"""The relay command as an operator runs it: each test starts real OS processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from tests.support import (
    WAIT,
    Admin,
    Browser,
    RelayProcess,
    eventually,
    local_config,
    notification,
    post_raw,
    rss_bytes,
)


def write_config(tmp_path: Path, data: dict[str, Any], name: str = "relay.json") -> Path:
    path = tmp_path / name
    path.write_bytes(orjson.dumps(data))
    return path


def relay_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        input=stdin,
    )


@pytest.fixture
def running(tmp_path: Path) -> Any:
    processes: list[RelayProcess] = []

    def start(data: dict[str, Any], *extra: str) -> RelayProcess:
        process = RelayProcess(write_config(tmp_path, data), extra).start()
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.kill()


def test_check_config_accepts_the_example() -> None:
    result = relay_cli("check-config", "--config", "aphlict.example.json")
    assert result.returncode == 0, result.stderr
    assert "aphlict.example.json: OK" in result.stdout
    assert result.stdout.splitlines() == [
        "aphlict.example.json: OK (1 client listener, 1 admin listener, 0 cluster peers)"
    ]


BROKEN_CONFIGS = [
    (
        {"servers": [{"type": "client", "port": 1}, {"type": "admin", "port": 1}]},
        "servers[1].port: port 1 is already used by servers[0]",
    ),
    (
        {"servers": [{"type": "client", "port": 1}, {"type": "panel", "port": 2}]},
        "servers[1].type: must be 'client' or 'admin'",
    ),
    (
        {"servers": [{"type": "client", "port": 1, "ssl.key": "k"}, {"type": "admin", "port": 2}]},
        'servers[0]: "ssl.key" is set but "ssl.cert" is not',
    ),
    (
        {"servers": [{"type": "client", "port": 1}, {"type": "admin", "port": 2, "ssl.cert": "c"}]},
        'servers[1]: "ssl.cert" is set but "ssl.key" is not',
    ),
    (
        {
            "servers": [
                {"type": "client", "port": 1, "ssl.chain": "c"},
                {"type": "admin", "port": 2},
            ]
        },
        'servers[0]: "ssl.chain" is set without',
    ),
    ({"servers": []}, "servers: no servers are configured"),
    ({"servers": [{"type": "admin", "port": 2}]}, 'servers: no "client" server is configured'),
    ({"servers": [{"type": "client", "port": 2}]}, 'servers: no "admin" server is configured'),
    (
        {
            "servers": [{"type": "client", "port": 1}, {"type": "admin", "port": 2}],
            "cluster": [{"host": "h", "port": 3, "protocol": "ws"}],
        },
        "cluster[0].protocol: must be 'http' or 'https'",
    ),
    (
        {
            "servers": [{"type": "client", "port": 1}, {"type": "admin", "port": 2}],
            "cluster": [
                {"host": "h", "port": 3, "protocol": "http"},
                {"host": "h", "port": 3, "protocol": "http"},
            ],
        },
        "cluster[1]: peer h:3 is listed twice (also at cluster[0])",
    ),
    (
        {"servers": [{"type": "client", "port": 1, "colour": "red"}, {"type": "admin", "port": 2}]},
        "servers[0].colour: is not a known setting",
    ),
    (
        {**local_config(), "workers": 0},
        "workers: must be greater than or equal to 1",
    ),
]


@pytest.mark.parametrize(("data", "expected"), BROKEN_CONFIGS)
def test_check_config_names_entry_and_field(
    tmp_path: Path, data: dict[str, Any], expected: str
) -> None:
    path = write_config(tmp_path, data, "broken.json")
    result = relay_cli("check-config", "--config", str(path))
    assert result.returncode == 1
    assert f"relay: {path}: {expected}" in result.stderr


def test_serve_refuses_a_broken_config_before_starting(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"servers": []}, "broken.json")
    result = relay_cli("serve", "--config", str(path))
    assert result.returncode == 1
    assert "no servers are configured" in result.stderr


def test_serve_writes_the_pidfile_and_sigterm_closes_browsers_with_1001(
    tmp_path: Path, running: Any
) -> None:
    pidfile = tmp_path / "run" / "relay.pid"
    log_file = tmp_path / "logs" / "relay.log"
    node = running(local_config(pidfile=str(pidfile), logs=[{"path": str(log_file)}]))
    assert pidfile.read_text().strip() == str(node.pid)

    async def scenario() -> tuple[int | None, float]:
        browser = await Browser.open(node.client_ports[0])
        await browser.sync()
        started = time.monotonic()
        node.signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(browser.ws.recv(), WAIT)
        return closed.value.rcvd.code if closed.value.rcvd else None, started

    code, started = asyncio.run(scenario())
    status, output = node.wait(timeout=5)
    assert code == 1001
    assert status == 0
    assert time.monotonic() - started < 5
    assert not pidfile.exists()
    assert "received SIGTERM, shutting down" in log_file.read_text()
    assert "stopped" in output


def test_sigint_also_shuts_down_cleanly(running: Any) -> None:
    node = running(local_config())
    node.signal(signal.SIGINT)
    assert node.wait(timeout=5)[0] == 0


def test_a_second_node_on_the_same_pidfile_is_refused(tmp_path: Path, running: Any) -> None:
    pidfile = tmp_path / "relay.pid"
    running(local_config(pidfile=str(pidfile)))
    second = write_config(tmp_path, local_config(pidfile=str(pidfile)), "second.json")
    result = relay_cli("serve", "--config", str(second))
    assert result.returncode == 1
    assert "already running" in result.stderr


def test_a_pidfile_naming_another_program_is_taken_over(tmp_path: Path, running: Any) -> None:
    """After a reboot, the recorded pid may run any program: relay is not running then."""
    pidfile = tmp_path / "relay.pid"
    log_file = tmp_path / "relay.log"
    with subprocess.Popen(["sleep", "60"]) as other:
        try:
            pidfile.write_text(f"{other.pid}\n")
            node = running(local_config(pidfile=str(pidfile), logs=[{"path": str(log_file)}]))
            assert pidfile.read_text().strip() == str(node.pid)
            assert f"names pid {other.pid}, which runs another program now" in log_file.read_text()
        finally:
            other.kill()


def test_a_port_in_use_exits_nonzero_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = local_config()
        config["servers"][1]["port"] = port
        path = write_config(tmp_path, config)
        result = relay_cli("serve", "--config", str(path))
    assert result.returncode == 1
    assert (
        f"{path}: servers[1].port: cannot listen for admin connections on 127.0.0.1:{port}: "
        "Address already in use (another process holds the port)"
    ) in result.stderr


def test_status_and_notify_commands_talk_to_a_running_node(tmp_path: Path, running: Any) -> None:
    node = running(local_config())
    # The commands find the node through the same config file, with the real ports.
    config = local_config()
    config["servers"][0]["port"] = node.client_ports[0]
    config["servers"][1]["port"] = node.admin_ports[0]
    path = write_config(tmp_path, config, "client.json")

    async def scenario() -> list[dict[str, Any]]:
        browser = await Browser.open(node.client_ports[0], "/~acme/")
        await browser.subscribe("PHID-CLI")
        notify = await asyncio.to_thread(
            relay_cli, "notify", "--config", str(path), "--key", "PHID-CLI", "--instance", "acme"
        )
        assert notify.returncode == 0, notify.stderr
        received = await browser.drain()
        await browser.close()
        return received

    received = asyncio.run(scenario())
    assert [m["subscribers"] for m in received] == [["PHID-CLI"]]
    status = relay_cli("status", "--config", str(path), "--instance", "acme", "--json")
    assert status.returncode == 0, status.stderr
    report = orjson.loads(status.stdout)
    assert report["instance"] == "acme"
    assert report["messages.in"] == 1


def test_status_against_a_stopped_node_says_so(tmp_path: Path) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    config = local_config()
    config["servers"][1]["port"] = port
    result = relay_cli("status", "--config", str(write_config(tmp_path, config)))
    assert result.returncode == 1
    assert "cannot reach the node's admin port" in result.stderr


def test_log_file_survives_rotation(tmp_path: Path, running: Any) -> None:
    log_file = tmp_path / "relay.log"
    node = running(local_config(logs=[{"path": str(log_file)}]))
    rotated = tmp_path / "relay.log.1"
    log_file.rename(rotated)

    async def cause_a_log_line() -> None:
        browser = await Browser.open(node.client_ports[0])
        await browser.ws.send("garbage after rotation")
        await browser.sync()
        await browser.close()

    asyncio.run(cause_a_log_line())
    node.signal(signal.SIGHUP)
    node.signal(signal.SIGTERM)
    node.wait()
    assert "garbage" not in rotated.read_text()
    assert "unusable frame" in log_file.read_text()


def test_a_64_mib_post_is_refused_without_growing_memory(running: Any) -> None:
    node = running(local_config())
    before = rss_bytes(node.pid)
    size = 64 * 1024 * 1024
    chunk = b"x" * (1024 * 1024)
    response = post_raw(
        node.admin_ports[0], f"Content-Length: {size}\r\n".encode(), (chunk for _ in range(64))
    )
    after = rss_bytes(node.pid)
    assert response.startswith(b"HTTP/1.1 413")
    assert after - before < 5 * 1024 * 1024, (before, after)
    # And the node still serves.
    status = relay_cli("status", "--config", str(node.config_path))
    assert status.returncode == 1  # the config names port 0: status cannot find the node
    assert node.proc is not None
    assert node.proc.poll() is None


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_running_as_root_draws_a_warning(running: Any) -> None:
    node = running(local_config())
    node.signal(signal.SIGTERM)
    assert "running as root" in node.wait()[1]


def test_notify_sends_the_configured_secret(tmp_path: Path, running: Any) -> None:
    secret = tmp_path / "secret"
    secret.write_text("cli-secret-value\n")
    node = running(local_config(admin={"secret_file": str(secret)}))
    config = local_config(admin={"secret_file": str(secret)})
    config["servers"][1]["port"] = node.admin_ports[0]
    path = write_config(tmp_path, config, "client.json")
    result = relay_cli("notify", "--config", str(path), "--key", "PHID-S")
    assert result.returncode == 0, result.stderr
    assert "node fingerprint" in result.stdout
    assert "cli-secret-value" not in result.stdout + result.stderr
    secret.write_text("another-value\n")  # now the CLI's secret is wrong
    refused = relay_cli("notify", "--config", str(path), "--key", "PHID-S")
    assert refused.returncode == 1
    assert "the node answered 403" in refused.stderr
    assert "another-value" not in refused.stderr


def test_notify_and_status_reach_a_node_by_url_without_a_config(
    tmp_path: Path, running: Any
) -> None:
    # A peer that is down, so that the status table has a peer row to show.
    node = running(local_config(cluster=[{"host": "127.0.0.1", "port": 9, "protocol": "http"}]))
    url = f"http://127.0.0.1:{node.admin_ports[0]}"
    payload = tmp_path / "payload.json"
    payload.write_text('{"column": "PHID-PCOL-done"}')

    async def scenario() -> list[dict[str, Any]]:
        browser = await Browser.open(node.client_ports[0], "/~acme/")
        await browser.subscribe("PHID-PROJ-board")
        for data in ('{"moved": ["T1", "T2"], "key": "42"}', f"@{payload}"):
            sent = await asyncio.to_thread(
                relay_cli, "notify", "-u", url, "-i", "acme", "-k", "PHID-PROJ-board",
                "-t", "workboards", "-d", data,
            )  # fmt: skip
            assert sent.returncode == 0, sent.stderr
            assert "(workboards) to PHID-PROJ-board" in sent.stdout
        # Short flags, the payload on stdin, and the receipt as JSON.
        sent = await asyncio.to_thread(
            relay_cli, "notify", "--url", url, "--instance", "acme", "-k", "PHID-PROJ-board",
            "-k", "PHID-USER-other", "-d", "-", "-j", stdin='{"threadPHID": "PHID-CONP-1"}',
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert set(orjson.loads(sent.stdout)) == {"uniqueID", "fingerprint"}
        received = await browser.drain()
        await browser.close()
        return received

    received = asyncio.run(scenario())
    for message in received:
        assert len(message.pop("uniqueID")) == 32
        assert len(message.pop("touched")) == 1
    assert received == [
        {
            "key": "42",
            "type": "workboards",
            "subscribers": ["PHID-PROJ-board"],
            "moved": ["T1", "T2"],
        },
        {
            "key": "PHID-PROJ-board",
            "type": "workboards",
            "subscribers": ["PHID-PROJ-board"],
            "column": "PHID-PCOL-done",
        },
        {
            "key": "PHID-PROJ-board",
            "type": "test",
            "subscribers": ["PHID-PROJ-board", "PHID-USER-other"],
            "threadPHID": "PHID-CONP-1",
        },
    ]

    table = relay_cli("status", "-u", url, "-i", "acme")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("relay node ")
    assert lines[0].endswith("instance acme")
    assert "  browsers  0 connected, 1 since start" in lines
    assert "  messages  3 in, 3 out" in lines
    peer_header, peer_row = lines[lines.index("Cluster peers") + 1 :][:2]
    assert peer_header.split() == [
        "PEER", "STATE", "SENT", "FAILED", "DROPPED", "QUEUE", "LATENCY", "LAST", "ERROR",
    ]  # fmt: skip
    assert peer_row.split()[:2] == ["http://127.0.0.1:9", "down"]
    # relay's own sections read as words, as the figures above them do.
    assert lines[lines.index("Overload") + 1 :][:4] == [
        "  policy  refuse: new posts are answered 503 while a peer's queue is full",
        "  now     every peer keeps up",
        "  so far  0 episodes, 0 posts refused",
        "",
    ]

    # The same node by host and port, as JSON.
    as_json = relay_cli("status", "-H", "127.0.0.1", "-p", str(node.admin_ports[0]), "-j")
    assert as_json.returncode == 0, as_json.stderr
    report = orjson.loads(as_json.stdout)
    assert report["instance"] == "default"
    assert report["cluster"][0]["port"] == 9


@pytest.mark.parametrize("value", ["url-secret-value", "url-gehéim-€-value"])
def test_a_secret_file_option_carries_the_secret(tmp_path: Path, running: Any, value: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text(value + "\n", encoding="utf-8")
    node = running(local_config(admin={"secret_file": str(secret)}))
    url = f"http://127.0.0.1:{node.admin_ports[0]}/"
    without = relay_cli("notify", "-u", url, "-k", "PHID-S")
    assert without.returncode == 1
    assert "the node answered 401" in without.stderr
    with_secret = relay_cli("notify", "-u", url, "-k", "PHID-S", "--secret-file", str(secret))
    assert with_secret.returncode == 0, with_secret.stderr
    assert value not in with_secret.stdout + with_secret.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["status", "-u", "ftp://127.0.0.1:1"], "--url: 'ftp://127.0.0.1:1' must start with"),
        (["status", "-u", "http://127.0.0.1:1/status/"], "without a path"),
        (["status", "-u", "http://127.0.0.1:99999"], "has an invalid port"),
        (["status", "-u", "http://127.0.0.1:1", "-p", "2"], "give --url or --host/--port"),
        (["status", "-p", "0"], "--port: 0 is not a port"),
        (["status", "--secret-file", "/nonexistent/secret"], "--secret-file: cannot read"),
        (["notify", "-k", "K", "-d", '{"a": '], "--data: not valid JSON"),
        (["notify", "-k", "K", "-d", "@/nonexistent/data.json"], "--data: cannot read"),
        (["notify", "-k", "K", "-d", "[1, 2]"], "--data: must be a JSON object"),
        (["notify", "-k", "K", "-d", '{"subscribers": ["X"]}'], "give the subscribers with -k"),
        (["notify", "-k", "K", "-k", ""], "-k/--key: a key cannot be empty"),
    ],
)
def test_client_options_that_cannot_work_get_a_clear_error(args: list[str], expected: str) -> None:
    result = relay_cli(*args)
    assert result.returncode == 1
    assert result.stderr.startswith("relay: ")
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_cluster_status_takes_the_url_too(running: Any) -> None:
    node = running(local_config())
    result = relay_cli("cluster-status", "-u", f"127.0.0.1:{node.admin_ports[0]}", "-j")
    assert result.returncode == 1
    assert "the node answered 404" in result.stderr
    assert "cluster-status module is not configured" in result.stderr
    # The node's words, not its JSON, and how to turn the module on.
    assert result.stderr.splitlines() == [
        f"relay: http://127.0.0.1:{node.admin_ports[0]}/cluster-status/: the node answered "
        "404: the cluster-status module is not configured on this node; to turn it on, add a "
        '"cluster_status" section to the node\'s config file (README, "Cluster status") and '
        "reload the node (SIGHUP)"
    ]


def test_the_client_port_given_for_the_admin_port_is_named(running: Any) -> None:
    node = running(local_config())
    url = f"http://127.0.0.1:{node.client_ports[0]}"
    for command in ("status", "cluster-status"):
        result = relay_cli(command, "-u", url)
        assert result.returncode == 1
        path = "/status/" if command == "status" else "/cluster-status/"
        assert result.stderr.splitlines() == [
            f"relay: {url}{path}: the node answered 501 (HTTP/501 Use Websockets): that is a "
            "client port, where browsers connect; give its admin port instead (the config's "
            '"admin" server, 22281 by default)'
        ]


def test_a_sighup_while_the_node_starts_is_a_reload_once_it_serves(tmp_path: Path) -> None:
    # A broker that accepts but never answers holds the start for its timeouts, as
    # a slow Redis does; the pidfile is there already, so logrotate's HUP may come.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        broker = {
            "url": f"redis://127.0.0.1:{silent.getsockname()[1]}/0",
            "connect_timeout_seconds": 2,
            "timeout_seconds": 2,
        }
        path = write_config(tmp_path, local_config(broker=broker))
        node = RelayProcess(path)
        node.proc = subprocess.Popen(node.args, stderr=subprocess.PIPE, text=True)
        assert node.proc.stderr is not None
        deadline = time.monotonic() + WAIT
        sent = False
        try:
            while time.monotonic() < deadline:
                line = node.proc.stderr.readline()
                if not line:
                    break  # it exited
                node.output.append(line)
                if "starting relay node" in line:
                    node.signal(signal.SIGHUP)
                    sent = True
                if "configuration reloaded" in line:
                    break
            assert sent, "".join(node.output)
            assert node.proc.poll() is None, "".join(node.output)
            node.signal(signal.SIGTERM)
            status, output = node.wait()
        finally:
            node.kill()
    assert status == 0, output
    assert "received SIGHUP while starting; the reload follows once the node serves" in output
    assert f"configuration reloaded from {path}" in output


def test_a_reload_with_a_log_file_it_cannot_open_changes_nothing(
    tmp_path: Path, running: Any
) -> None:
    node = running(local_config(limits={"max_subscriptions": 5}))
    log = node.follow_log()
    (tmp_path / "a-file").write_text("")
    unopenable = tmp_path / "a-file" / "relay.log"
    new = local_config(limits={"max_subscriptions": 2}, logs=[{"path": str(unopenable)}])
    write_config(tmp_path, new)
    node.signal(signal.SIGHUP)

    async def scenario() -> list[dict[str, Any]]:
        async def refused() -> bool:
            return any("reload" in line for _, line in log if "refused" in line)

        await eventually(refused, "the reload was refused")
        browser = await Browser.open(node.client_ports[0])
        await browser.subscribe("K1", "K2", "K3")
        async with aiohttp.ClientSession() as session:
            admin = Admin(session, node.admin_ports[0])
            assert (await admin.post(notification("K3", unique_id="third")))[0] == 200
        received = await browser.drain()
        await browser.close()
        return received

    # The running configuration stays: all of it, the subscription cap too.
    assert [m["uniqueID"] for m in asyncio.run(scenario())] == ["third"]
    refusal = next(line for _, line in log if "reload refused" in line)
    assert (
        f"the running configuration stays: {tmp_path / 'relay.json'}: logs[0].path: "
        f"cannot open the log file {unopenable}"
    ) in refusal
    assert not any("configuration reloaded" in line for _, line in log)


def test_a_port_answering_something_else_than_http_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

        # The command's one request is answered on the thread, while the command runs.
        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        result = relay_cli("status", "-u", url)
        thread.join(WAIT)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr == (
        f"relay: {url}/status/: the answer is not HTTP (BadStatusLine); "
        "is this a relay admin port?\n"
    )
