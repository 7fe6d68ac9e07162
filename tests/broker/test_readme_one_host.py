"""The README's broker mode on one host, run as written: Redis, two nodes, two browsers, a post.

The config files and commands come from the README's code blocks; only the
Redis port is changed (to a redis-server of the test's own). Also here: a
broker-mode node, once it logged "stopped", exits within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.redis_harness import RedisServer
from tests.support import WAIT, Browser, free_ports

pytestmark = pytest.mark.slow

README = Path(__file__).parents[2] / "README.md"
SECTION = "### Broker mode on one host, step by step\n"
README_PORT = ":6379"
#: How long a broker-mode node may take to exit once it logged "stopped".
EXIT_BOUND = 1.0


def one_host_section() -> str:
    text = README.read_text()
    assert SECTION in text, "the README no longer has its broker one-host steps"
    return text.split(SECTION, 1)[1].split("\n### ", 1)[0]


def code_blocks(section: str, language: str) -> list[str]:
    """The ``language`` code blocks of ``section``, their list indentation removed."""
    blocks = re.findall(rf"^( *)```{language}\n(.*?)^\1```", section, re.DOTALL | re.MULTILINE)
    return [
        "\n".join(line.removeprefix(indent) for line in body.splitlines())
        for indent, body in blocks
    ]


def config_files(section: str) -> dict[str, str]:
    """``node1.json`` and the like: each name in backquotes, then its JSON block."""
    found = re.findall(r"`(\w+\.json)`:\n\n *```json\n(.*?)```", section, re.DOTALL)
    assert len(found) == 2, "the README shows two config files"
    return {name: body for name, body in found}


def commands(section: str) -> list[str]:
    return [line for block in code_blocks(section, "sh") for line in block.splitlines() if line]


def as_test_runs(command: str, port: int) -> list[str]:
    """The README's command, with ``relay`` as this interpreter's and the test's Redis port."""
    words = shlex.split(command.replace(README_PORT, f":{port}"))
    if words[0] == "relay":
        return [sys.executable, "-m", "relay", *words[1:]]
    return words


async def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run a command to its end (off the event loop, which the browsers share)."""
    return await asyncio.to_thread(
        subprocess.run, argv, cwd=cwd, capture_output=True, timeout=WAIT, check=False
    )


@contextlib.contextmanager
def serving(argv: list[str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` (a ``relay serve``), logging to ``log``; always stopped at the end."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(WAIT)


def wait_for_log(log: Path, pattern: str, proc: subprocess.Popen[bytes]) -> str:
    """Poll (bounded) until ``pattern`` is logged; the matching line."""
    deadline = time.monotonic() + 3 * WAIT
    while (found := re.search(f".*{pattern}.*", log.read_text(errors="replace"))) is None:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{pattern!r} not logged:\n{log.read_text()}"
        time.sleep(0.02)  # a bounded poll of the log file
    return found.group(0)


async def test_the_readmes_one_host_steps_deliver_to_both_browsers(tmp_path: Path) -> None:
    section = one_host_section()
    redis = RedisServer(tmp_path / "redis").start()
    try:
        files = config_files(section)
        # The nodes' ports too are the OS's picks: tests never take fixed ports.
        ports = {port: free for port, free in zip(node_ports(files), free_ports(4), strict=True)}
        for name, body in files.items():
            (tmp_path / name).write_text(
                on_ports(body, ports).replace(README_PORT, f":{redis.port}")
            )
        steps = commands(section)
        assert [s for s in steps if s.startswith("sudo ")] == ["sudo apt-get install redis-server"]
        ping = next(s for s in steps if s.startswith("redis-cli "))
        answer = await run(as_test_runs(ping, redis.port), tmp_path)
        assert answer.stdout.strip() == b"PONG"
        serves = [s for s in steps if s.startswith("relay serve ")]
        assert len(serves) == 2
        with contextlib.ExitStack() as stack:
            for n, serve in enumerate(serves):
                log = tmp_path / f"serve-{n}.log"
                proc = stack.enter_context(serving(as_test_runs(serve, redis.port), tmp_path, log))
                wait_for_log(log, re.escape(f"broker redis://127.0.0.1:{redis.port}/0 is up"), proc)
                wait_for_log(log, "admin listener ready", proc)
            browsers = await open_browsers(section, files, ports)
            notify = next(s for s in steps if s.startswith("relay notify "))
            posted = await run(as_test_runs(notify, redis.port), tmp_path)
            assert posted.returncode == 0, posted.stderr
            key = subscribed_key(section)
            for browser in browsers:
                message = await browser.recv()
                assert message["key"] == key
                assert message["subscribers"] == [key]
                assert await browser.drain() == []  # once
                await browser.close()
    finally:
        redis.stop()


def subscribed_key(section: str) -> str:
    (script,) = code_blocks(section, "js")
    found = re.search(r'data: \["([^"]+)"\]', script)
    assert found, "the README's browser snippet no longer subscribes to one key"
    return found.group(1)


def node_ports(files: dict[str, str]) -> list[int]:
    """The listeners' ports in the README's config files, in order."""
    return [s["port"] for body in files.values() for s in orjson.loads(body)["servers"]]


def on_ports(body: str, ports: dict[int, int]) -> str:
    """A config file of the README's with each listener's port replaced as ``ports`` says."""
    return re.sub(r'"port": (\d+)', lambda m: f'"port": {ports[int(m.group(1))]}', body)


async def open_browsers(
    section: str, files: dict[str, str], ports: dict[int, int]
) -> list[Browser]:
    """A browser on each node, as the README's console snippet opens one, subscribed."""
    (script,) = code_blocks(section, "js")
    url = re.search(r'new WebSocket\("ws://127\.0\.0\.1:(\d+)(/[^"]*)"\)', script)
    assert url, "the README's browser snippet no longer opens ws://127.0.0.1:PORT/"
    client_ports = [
        next(s["port"] for s in orjson.loads(body)["servers"] if s["type"] == "client")
        for body in files.values()
    ]
    assert int(url.group(1)) == client_ports[0]
    assert f"the same with `{client_ports[1]}`" in section
    browsers = []
    for port in client_ports:
        browser = await Browser.open(ports[port], url.group(2))
        await browser.subscribe(subscribed_key(section))
        browsers.append(browser)
    return browsers


def test_a_broker_mode_node_exits_soon_after_it_stopped(tmp_path: Path) -> None:
    """Once "stopped" is logged nothing is left to wait for: the process ends within the bound."""
    section = one_host_section()
    redis = RedisServer(tmp_path / "redis").start()
    try:
        config = config_files(section)["node1.json"].replace(README_PORT, f":{redis.port}")
        (tmp_path / "node.json").write_text(config)
        log = tmp_path / "serve.log"
        argv = [sys.executable, "-m", "relay", "serve", "--config", "node.json"]
        with serving(argv, tmp_path, log) as proc:
            wait_for_log(log, "admin listener ready", proc)
            wait_for_log(log, " is up", proc)
            proc.send_signal(signal.SIGTERM)
            proc.wait(WAIT)
            exited = time.time()
        stopped = wait_for_log(log, r"relay node \S+ stopped", proc)
        at = datetime.datetime.strptime(stopped[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        assert exited - at < EXIT_BOUND, f"exited {exited - at:.2f} s after it stopped"
    finally:
        redis.stop()
