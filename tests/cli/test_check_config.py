"""``relay check-config`` as operators run it: every problem in one run, as serve sees them."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.redis_harness import RedisServer
from tests.support import WAIT, RelayProcess, free_ports, local_config

README = Path(__file__).parents[2] / "README.md"


def relay(*args: str, cwd: Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "relay", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=cwd,
    )


def readme_example() -> tuple[dict[str, Any], list[str]]:
    """The broken file the README shows, and the lines it says check-config prints."""
    text = README.read_text()
    config = re.search(r"With this `broken.json`:\n\n```json\n(.*?)```", text, re.DOTALL)
    run = re.search(r"\$ relay check-config --config broken.json\n(.*?)```", text, re.DOTALL)
    assert config, "the README no longer shows the broken.json of its check-config example"
    assert run, "the README no longer shows what check-config prints for broken.json"
    return orjson.loads(config.group(1)), run.group(1).splitlines()


def test_the_readmes_example_prints_both_problems_in_one_run(tmp_path: Path) -> None:
    broken, printed = readme_example()
    (tmp_path / "broken.json").write_bytes(orjson.dumps(broken))
    result = relay("check-config", "--config", "broken.json", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == printed
    assert len(printed) == 2


def test_an_ok_counts_in_words_for_one_and_for_many(tmp_path: Path) -> None:
    config = local_config(
        cluster=[{"host": "127.0.0.1", "port": 22281, "protocol": "http"}],
        broker={"url": "redis://127.0.0.1:6379/0"},
        workers=2,
    )
    config["servers"].append({"type": "client", "port": 0, "listen": "127.0.0.1"})
    (tmp_path / "relay.json").write_bytes(orjson.dumps(config))
    result = relay("check-config", "--config", "relay.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "relay.json: OK (2 client listeners, 1 admin listener, 1 cluster peer, 2 workers)"
    ]


def test_connect_says_the_cluster_peers_are_not_contacted(tmp_path: Path) -> None:
    config = local_config(cluster=[{"host": "127.0.0.1", "port": 22281, "protocol": "http"}])
    (tmp_path / "relay.json").write_bytes(orjson.dumps(config))
    result = relay("check-config", "--connect", "--config", "relay.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # Not "nothing to connect to": there is a peer, and --connect leaves it alone.
    assert result.stdout.splitlines() == [
        "relay.json: OK (1 client listener, 1 admin listener, 1 cluster peer); nothing to "
        "connect to (cluster peers are not contacted: the list may name this node, not "
        "serving yet)"
    ]


def test_what_serve_would_refuse_is_reported_with_the_files_problems(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    config = {
        "servers": [
            {"type": "client", "port": 22280, "listen": "127.0.0.1"},
            {"type": "admin", "port": 22280, "listen": "not an address"},
            {
                "type": "client",
                "port": 22282,
                "ssl.key": str(tmp_path / "missing.key"),
                "ssl.cert": str(tmp_path / "missing.crt"),
            },
        ],
        "logs": [{"path": str(a_file / "relay.log")}],
        "admin": {"secret_file": str(tmp_path / "no-secret")},
        "cluster": [
            {"host": "10.0.0.2", "port": 22281, "protocol": "https", "ca_file": "/nonexistent"}
        ],
        "broker": {"url": "rediss://10.0.0.3:6380/0", "ca_file": "/nonexistent-ca.pem"},
    }
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(config))
    result = relay("check-config", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 1
    lines = [line.removeprefix(f"relay: {path}: ") for line in result.stderr.splitlines()]
    assert lines == [
        "servers[1].port: port 22280 is already used by servers[0]",
        'servers[1].listen: "not an address" is neither an IP address nor a host name',
        f"servers[2]: cannot load TLS files (ssl.cert {tmp_path}/missing.crt, ssl.key "
        f"{tmp_path}/missing.key): No such file or directory",
        f"logs[0].path: cannot open the log file {a_file}/relay.log: "
        f"{a_file} is not a writable directory",
        f"admin.secret_file: cannot read {tmp_path}/no-secret: No such file or directory",
        "cluster[0].ca_file: cannot load the CA file /nonexistent: No such file or directory",
        "broker.ca_file: cannot load the CA file /nonexistent-ca.pem: No such file or directory",
    ]


def test_a_listen_name_that_does_not_resolve_is_refused_by_both(tmp_path: Path) -> None:
    config = {
        "servers": [
            {"type": "client", "port": 0, "listen": "not-an-address"},
            {"type": "admin", "port": 0, "listen": "127.0.0.1"},
        ]
    }
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(config))
    # A network namespace of its own, with no way out: resolving the name
    # must fail here without a query leaving for the real DNS.
    isolated = ("unshare", "--user", "--map-root-user", "--net")
    check = relay("check-config", "--config", str(path), cwd=tmp_path, prefix=isolated)
    assert check.returncode == 1, check.stderr
    assert f'relay: {path}: servers[0].listen: cannot resolve "not-an-address"' in check.stderr
    serve = relay("serve", "--config", str(path), cwd=tmp_path, prefix=isolated)
    assert serve.returncode == 1
    assert f'relay: {path}: servers[0].listen: cannot resolve "not-an-address"' in serve.stderr


def _problem_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("relay: ")]


# What check-config refuses, serve refuses with the very same lines, naming the file.
SERVE_REFUSES: dict[str, tuple[dict[str, Any], str]] = {
    "an address this machine does not have": (
        {"servers": [{"type": "client", "port": 0, "listen": "192.0.2.1"}]},
        "servers[0].listen: cannot listen for client connections on 192.0.2.1:0: "
        "Cannot assign requested address (this machine has no such address)",
    ),
    "a pidfile that cannot be written": (
        {"pidfile": "/proc/relay-check/relay.pid"},
        "pidfile: cannot write /proc/relay-check/relay.pid: No such file or directory",
    ),
    "a log file that cannot be written": (
        {"logs": [{"path": "/proc/relay-check.log"}]},
        "logs[0].path: cannot open the log file /proc/relay-check.log: No such file or directory",
    ),
    "a broker URL redis-py cannot read": (
        {"broker": {"url": "redis://127.0.0.1:1/0?socket_timeout=soon"}},
        "broker.url: redis-py cannot use it: Invalid value for 'socket_timeout' in connection URL.",
    ),
}


@pytest.mark.parametrize("case", SERVE_REFUSES, ids=list(SERVE_REFUSES))
def test_check_config_and_serve_refuse_alike(tmp_path: Path, case: str) -> None:
    change, problem = SERVE_REFUSES[case]
    config = local_config()
    for section, value in change.items():
        if section == "servers":
            config["servers"][0].update(value[0])
        else:
            config[section] = value
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(config))
    check = relay("check-config", "--config", str(path), cwd=tmp_path)
    serve = relay("serve", "--config", str(path), cwd=tmp_path)
    assert (check.returncode, serve.returncode) == (1, 1), serve.stderr
    assert _problem_lines(check) == [f"relay: {path}: {problem}"]
    assert _problem_lines(serve) == [f"relay: {path}: {problem}"]


def test_a_port_another_process_holds_is_a_warning_for_check_config_an_error_for_serve(
    tmp_path: Path,
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = local_config()
        config["servers"][1]["port"] = port
        path = tmp_path / "relay.json"
        path.write_bytes(orjson.dumps(config))
        check = relay("check-config", "--config", str(path), cwd=tmp_path)
        serve = relay("serve", "--config", str(path), cwd=tmp_path)
    held = (
        f"{path}: servers[1].port: cannot listen for admin connections on 127.0.0.1:{port}: "
        "Address already in use (another process holds the port)"
    )
    assert check.returncode == 0, check.stderr
    assert check.stderr.splitlines() == [
        f"relay: warning: {held}; serve cannot start until it is free"
    ]
    assert check.stdout.startswith(f"{path}: OK")
    assert serve.returncode == 1
    assert f"ERROR relay.cli: {held}" in serve.stderr


def test_more_connections_than_open_files_is_a_warning_for_check_config_an_error_for_serve(
    tmp_path: Path,
) -> None:
    """check-config runs in the operator's shell, whose limit a service's may not share."""
    config = local_config(limits={"max_connections": 1_000_000})
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(config))
    prefix = ("prlimit", "--nofile=1024:4096")
    check = relay("check-config", "--config", str(path), cwd=tmp_path, prefix=prefix)
    serve = relay("serve", "--config", str(path), cwd=tmp_path, prefix=prefix)
    assert check.returncode == 0, check.stderr
    [warning] = check.stderr.splitlines()
    assert warning.startswith(f"relay: warning: {path}: limits.max_connections is 1000000, ")
    assert "LimitNOFILE=" in warning
    assert check.stdout.startswith(f"{path}: OK")
    assert serve.returncode == 1
    assert f"{path}: limits.max_connections is 1000000, " in serve.stderr


def test_connect_reaches_the_broker_and_names_what_it_cannot_reach(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    nothing_there = free_ports(1)[0]  # picked and let go: connections are refused
    config = local_config(
        broker={"url": redis_server.url},
        cluster_status={
            "databases": [{"host": "127.0.0.1", "port": nothing_there, "role": "master"}],
            "defaults": {"user": "monitor", "pass": "Connect-Check-SECRET"},
        },
    )
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(config))
    plain = relay("check-config", "--config", str(path), cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr  # without --connect nothing is contacted
    check = relay("check-config", "--connect", "--config", str(path), cwd=tmp_path)
    assert check.returncode == 1
    assert check.stderr.splitlines() == [
        f"relay: {path}: cluster_status.databases[0]: cannot check 127.0.0.1:{nothing_there}: "
        "Can't connect to MySQL server on '127.0.0.1' (Connection refused)"
    ]
    assert "Connect-Check-SECRET" not in check.stdout + check.stderr
    del config["cluster_status"]
    config["broker"]["url"] = f"redis://127.0.0.1:{nothing_there}/0"
    path.write_bytes(orjson.dumps(config))
    check = relay("check-config", "--connect", "--config", str(path), cwd=tmp_path)
    assert check.returncode == 1
    assert check.stderr.splitlines() == [
        f"relay: {path}: broker.url: cannot reach redis://127.0.0.1:{nothing_there}/0: "
        f"ConnectionError: Error 111 connecting to 127.0.0.1:{nothing_there}. Connection refused."
    ]
    config["broker"]["url"] = redis_server.url
    path.write_bytes(orjson.dumps(config))
    check = relay("check-config", "--connect", "--config", str(path), cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout == (
        f"{path}: OK (1 client listener, 1 admin listener, 0 cluster peers); "
        f"reached the broker {redis_server.url}\n"
    )


def _network_of_its_own(tmp_path: Path, hosts: str) -> tuple[str, ...]:
    """A prefix running a command in namespaces of its own: no way out, and ``hosts``.

    Its loopback has the IPv6 address ``fd00:5::1`` besides ``::1`` (a name for
    ``::1`` alone would not do: glibc hands IPv4 callers 127.0.0.1 for it).
    """
    (tmp_path / "hosts").write_text(hosts)
    inside = (
        "ip link set lo up && ip -6 addr add fd00:5::1/128 dev lo nodad && "
        'mount --bind "$1" /etc/hosts && shift && exec "$@"'
    )
    isolated = ("unshare", "--user", "--map-root-user", "--net", "--mount")
    return (*isolated, "sh", "-c", inside, "sh", str(tmp_path / "hosts"))


def _serves(args: list[str], cwd: Path, ready: str) -> tuple[bool, str]:
    """Run ``args`` until a line holds ``ready`` (then stop it) or it exits; what it logged."""
    proc = subprocess.Popen(
        args, cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert proc.stderr is not None
    timer = threading.Timer(WAIT, proc.kill)  # a hang fails the test instead of stalling CI
    timer.start()
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if ready in line:
                proc.terminate()
                break
        proc.communicate(timeout=WAIT)
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return any(ready in line for line in lines), "".join(lines)


def test_workers_listen_on_a_name_of_ipv6_addresses_as_check_config_said_they_would(
    tmp_path: Path,
) -> None:
    """The supervisor of a --workers node resolved a name as IPv4 only, and refused it."""
    config = local_config(workers=2, broker={"url": "redis://127.0.0.1:1/0"})
    config["servers"][0]["listen"] = "relay-v6"
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(config))
    prefix = _network_of_its_own(tmp_path, "127.0.0.1 localhost\nfd00:5::1 relay-v6\n")
    check = relay("check-config", "--config", str(path), cwd=tmp_path, prefix=prefix)
    assert check.returncode == 0, check.stderr
    args = [*prefix, sys.executable, "-m", "relay", "serve", "--config", str(path)]
    served, log = _serves(args, tmp_path, "relay node ready: 2 workers serving browsers on ")
    assert served, log
    assert "ws://relay-v6:" in log


def test_a_pidfile_naming_a_running_relay_is_a_warning_for_check_config_an_error_for_serve(
    tmp_path: Path,
) -> None:
    """check-config said OK while serve refused: the pidfile was only checked for writing."""
    pidfile = tmp_path / "run" / "relay.pid"
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(local_config(pidfile=str(pidfile))))
    running = RelayProcess(path).start()
    try:
        check = relay("check-config", "--config", str(path), cwd=tmp_path)
        serve = relay("serve", "--config", str(path), cwd=tmp_path)
    finally:
        running.signal(signal.SIGTERM)
        running.wait()
    problem = f"{path}: pidfile: {pidfile} says relay is already running as pid {running.pid}"
    assert check.returncode == 0, check.stderr
    assert check.stderr.splitlines() == [
        f"relay: warning: {problem}; serve cannot start while it runs"
    ]
    assert check.stdout.startswith(f"{path}: OK")
    assert serve.returncode == 1
    assert f"ERROR relay.cli: {problem}\n" in serve.stderr
