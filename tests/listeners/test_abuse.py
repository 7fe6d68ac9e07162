"""Abuse and faults against relay processes, with the server's memory read from /proc."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from tests.fuzz.wire import TEXT, frame
from tests.support import WAIT, Admin, RelayProcess, eventually, local_config, post_raw, rss_bytes
from tests.tools.readers import handshake

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
TOOLS = Path(__file__).parent.parent / "tools"


def start_relay(tmp_path: Path, **sections: Any) -> RelayProcess:
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(local_config(**sections)))
    relay = RelayProcess(path).start()
    relay.follow_log()
    return relay


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_browser_that_stops_reading_is_dropped_and_the_others_get_everything(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    # A short history, so that what the node retains on purpose is at its
    # steady size early and the growth measured is the stalled browser's.
    relay = await asyncio.to_thread(start_relay, tmp_path, history={"max_messages": 200})
    port = relay.client_ports[0]
    # Kernel buffers (128 KiB, doubled) plus relay's 1 MiB bound: ~1,400 posts.
    posts, rate = 2500, 1000.0
    readers = await asyncio.create_subprocess_exec(
        sys.executable,
        str(TOOLS / "readers.py"),
        str(port),
        "100",
        "PHID-LOAD",
        str(posts),
        str(posts / 50 + WAIT),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert readers.stdout is not None
        async with asyncio.timeout(WAIT):
            assert await readers.stdout.readline() == b"ready\n"
        # The stalled browser: subscribed, then never reads; a tiny receive
        # buffer so the kernel does not absorb much on its behalf.
        stalled = await asyncio.to_thread(handshake, port, "PHID-LOAD", 4096)
        admin = Admin(session, relay.admin_ports[0])
        assert (await admin.status())["clients.active"] == 101
        dropped_at: list[float] = []
        rss_before: list[int] = []

        async def watch() -> None:
            while not dropped_at:
                if (await admin.status())["clients.active"] <= 100:
                    dropped_at.append(time.time())
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        poster = await asyncio.create_subprocess_exec(
            sys.executable,
            str(TOOLS / "poster.py"),
            str(relay.admin_ports[0]),
            str(posts),
            str(rate),
            "4",
            "PHID-LOAD",
            "900",
            stdout=asyncio.subprocess.PIPE,
        )
        assert poster.stdout is not None
        async with asyncio.timeout(posts / 50 + WAIT):
            while not rss_before:
                if (await admin.status())["messages.in"] >= 500:  # history full: the baseline
                    rss_before.append(rss_bytes(relay.pid))
                await asyncio.sleep(0.05)
            posted = orjson.loads(await poster.stdout.readline())
            await poster.wait()
        assert posted["ok"] == posts
        achieved = posted["rate"]
        async with asyncio.timeout(WAIT):
            report = orjson.loads(await readers.stdout.readline())
            await readers.wait()
            await watcher
        rss_after = rss_bytes(relay.pid)
        stalled.close()
    finally:
        if readers.returncode is None:
            readers.kill()
            await readers.wait()
        relay.kill()
    assert [r for r in report if r != {"count": posts, "missing": 0, "repeated": 0}] == []
    bound_passed = [at for at, line in relay.timed_lines if "stopped reading" in line]
    assert len(bound_passed) == 1
    assert dropped_at[0] - bound_passed[0] < 2.0
    growth = rss_after - rss_before[0]
    print(
        f"posted {achieved:.0f}/s; dropped {dropped_at[0] - bound_passed[0]:.2f} s after "
        f"the bound; RSS growth {growth / MIB:.1f} MiB"
    )
    # The stalled browser may hold at most its 1 MiB bound; the healthy readers,
    # which lag a little on this 2-core machine, account for the rest.
    assert growth < 8 * MIB, growth


def test_huge_and_compressed_posts_get_413_without_growing_memory(tmp_path: Path) -> None:
    relay = start_relay(tmp_path)
    try:
        before = rss_bytes(relay.pid)
        size = 100 * 1000 * 1000
        block = b"x" * MIB
        declared = post_raw(
            relay.admin_ports[0],
            f"Content-Length: {size}\r\n".encode(),
            (block for _ in range(size // MIB + 1)),
        )
        chunked = post_raw(
            relay.admin_ports[0],
            b"Transfer-Encoding: chunked\r\n",
            (b"%x\r\n%s\r\n" % (len(block), block) for _ in range(size // MIB + 1)),
        )
        bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
        compressed = bomb.compress(b'{"subscribers":["A"],"pad":"')
        compressed += b"".join(bomb.compress(b"0" * MIB) for _ in range(1000)) + bomb.flush()
        gzip_bomb = post_raw(
            relay.admin_ports[0],
            b"Content-Encoding: gzip\r\nContent-Length: %d\r\n" % len(compressed),
            [compressed],
        )
        after = rss_bytes(relay.pid)
        still_serving = relay_status(relay)
    finally:
        relay.kill()
    assert declared.startswith(b"HTTP/1.1 413"), declared
    assert chunked.startswith(b"HTTP/1.1 413"), chunked
    assert len(compressed) < 2 * MIB  # 1 GB inflated
    assert gzip_bomb.startswith(b"HTTP/1.1 413"), gzip_bomb
    print(f"RSS growth {(after - before) / MIB:.1f} MiB")
    assert after - before < 20 * MIB
    assert still_serving["version"] == 7


def relay_status(relay: RelayProcess) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", relay.admin_ports[0]), timeout=WAIT) as sock:
        sock.sendall(b"GET /status/ HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return orjson.loads(response.split(b"\r\n\r\n", 1)[1])  # type: ignore[no-any-return]


async def test_a_10_mib_frame_and_a_deflate_bomb_close_with_1009_in_bounded_memory(
    tmp_path: Path,
) -> None:
    relay = await asyncio.to_thread(start_relay, tmp_path, browsers={"compression": True})
    port = relay.client_ports[0]
    try:
        before = rss_bytes(relay.pid)
        codes = []
        for compression in (None, "deflate"):
            ws = await websockets.connect(
                f"ws://127.0.0.1:{port}/", compression=compression, max_size=None
            )
            # Uncompressed: 10 MiB on the wire. Compressed: ~10 KiB that inflates to 10 MiB.
            await ws.send("0" * (10 * MIB))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(WAIT):
                    await ws.recv()
            codes.append(closed.value.rcvd.code if closed.value.rcvd else None)
        after = rss_bytes(relay.pid)
    finally:
        relay.kill()
    assert codes == [1009, 1009]
    print(f"RSS growth {(after - before) / MIB:.1f} MiB")
    assert after - before < 4 * MIB


async def test_a_frozen_browser_is_reaped_within_ping_interval_plus_timeout(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    # Long enough that a live browser's pong is never late on a loaded 2-core machine.
    interval, timeout = 1.0, 1.0
    relay = await asyncio.to_thread(
        start_relay,
        tmp_path,
        limits={"ping_interval_seconds": interval, "ping_timeout_seconds": timeout},
    )
    admin = Admin(session, relay.admin_ports[0])
    browser = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys, websockets.sync.client as c\n"
        f"ws = c.connect('ws://127.0.0.1:{relay.client_ports[0]}/')\n"
        "ws.send('{\"command\":\"ping\"}'); ws.recv(); print('ready', flush=True)\n"
        "import time\nwhile True: ws.recv()\n",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert browser.stdout is not None
        async with asyncio.timeout(WAIT):
            assert await browser.stdout.readline() == b"ready\n"

        # A live browser answers pings and stays, over several intervals.
        async def five_seconds_up() -> bool:
            return bool((await admin.status())["uptime"] >= 5000)

        await eventually(five_seconds_up, "the node has run for five ping intervals")
        assert (await admin.status())["clients.active"] == 1
        browser.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()

        async def reaped() -> bool:
            return bool((await admin.status())["clients.active"] == 0)

        await eventually(reaped, "the frozen browser is reaped")
        reaped_after = time.monotonic() - frozen_at
    finally:
        browser.kill()
        await browser.wait()
        relay.kill()
    print(f"reaped {reaped_after:.2f} s after freezing")
    # Silence counts from the last pong, so the reap comes at most interval +
    # timeout after the freeze, plus one sweep (a quarter of the shorter
    # period) and some scheduling slack for a loaded machine.
    assert reaped_after < interval + timeout + min(interval, timeout) / 4 + 0.5


def relay_side_sockets(client_port: int, browser_port: int) -> list[tuple[str, int, str]]:
    """What ``ss -tmn`` reports for relay's end of one browser connection.

    Each entry is (state, Send-Q bytes, skmem details); an empty list means
    the kernel holds nothing for it any more.
    """
    output = subprocess.run(
        [
            "ss",
            "-tmnH",
            "state",
            "all",
            f"( sport = :{client_port} and dport = :{browser_port} )",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=WAIT,
    ).stdout
    sockets = []
    for line in output.splitlines():
        fields = line.split()
        if fields and not line[0].isspace():
            # State, Recv-Q, Send-Q, local, peer; the skmem(...) line follows.
            sockets.append((fields[0], int(fields[2]), ""))
        elif fields and sockets and fields[0].startswith("skmem:"):
            state, queued, _ = sockets[-1]
            sockets[-1] = (state, queued, fields[0])
    return sockets


def read_until_closed(sock: socket.socket) -> None:
    """Read (blocking, bounded) until the connection ends."""
    sock.setblocking(True)
    sock.settimeout(WAIT)
    while sock.recv(1 << 20):
        pass


async def test_a_dropped_slow_browser_is_reset_and_its_queued_data_freed_at_once(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    relay = await asyncio.to_thread(start_relay, tmp_path)
    port = relay.client_ports[0]
    admin = Admin(session, relay.admin_ports[0])
    # A browser that subscribes, then never reads again: a tiny receive window,
    # so what relay sends piles up on relay's side.
    stalled = await asyncio.to_thread(handshake, port, "PHID-STALL", 4096)
    browser_port = stalled.getsockname()[1]
    try:
        pad = "x" * 32_000
        posted = 0
        # Kernel buffers (~256 KiB) plus the 1 MiB bound are ~40 posts of 32 KB.
        while not any("stopped reading" in line for _, line in relay.timed_lines):
            assert posted < 200, "relay never dropped the browser that stopped reading"
            status, _ = await admin.post({"subscribers": ["PHID-STALL"], "n": posted, "pad": pad})
            assert status == 200
            posted += 1
            await asyncio.sleep(0)  # let the log follower thread catch up
        dropped_at = time.monotonic()

        async def nothing_left() -> bool:
            return not any(queued for _, queued, _ in relay_side_sockets(port, browser_port))

        await eventually(nothing_left, "relay's socket of the dropped browser holds no data")
        freed_after = time.monotonic() - dropped_at
        left = relay_side_sockets(port, browser_port)
        # The browser learns at once, without reading what was queued for it.
        with pytest.raises(ConnectionResetError):
            read_until_closed(stalled)
        still_serving = (await admin.status())["clients.active"]
    finally:
        stalled.close()
        relay.kill()
    print(f"{posted} posts to fill; freed {freed_after:.2f} s after the drop; ss: {left}")
    assert left == [], left  # reset: not even an empty FIN-WAIT or TIME-WAIT socket remains
    assert freed_after < 2.0
    assert still_serving == 0


def peak_rss_bytes(pid: int) -> int:
    """The most resident memory the process has had (VmHWM), from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024


async def test_replays_asked_again_and_again_by_a_browser_that_reads_none_stay_bounded(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """2,000 replay commands in one write, none of the answers read: 1.2 GB, once.

    Each replay answers with up to ``replay_bytes`` (512 KiB) of history; all
    of one read's replays used to be queued before the first write, where the
    outbound bound is checked, and stalled every other browser meanwhile.
    """
    relay = await asyncio.to_thread(start_relay, tmp_path)
    admin = Admin(session, relay.admin_ports[0])
    pad = "x" * 4000
    for n in range(140):  # 560 KB retained for the key: a replay sends its full 512 KiB
        assert (await admin.post({"subscribers": ["PHID-REPLAY"], "n": n, "pad": pad}))[0] == 200
    stalled = await asyncio.to_thread(handshake, relay.client_ports[0], "PHID-REPLAY", 4096)
    replay = frame(TEXT, orjson.dumps({"command": "replay", "data": {"age": 60_000}}))
    before = peak_rss_bytes(relay.pid)
    try:
        stalled.setblocking(True)
        await asyncio.to_thread(stalled.sendall, replay * 2000)

        async def dropped() -> bool:
            return any("stopped reading" in line for _, line in relay.timed_lines)

        await eventually(dropped, "relay drops the browser that reads none of its replays")
        async with websockets.connect(f"ws://127.0.0.1:{relay.client_ports[0]}/") as other:
            await other.send(
                orjson.dumps({"command": "subscribe", "data": ["PHID-OTHER"]}).decode()
            )
            await other.send(orjson.dumps({"command": "ping"}).decode())
            async with asyncio.timeout(WAIT):
                assert orjson.loads(await other.recv()) == {"type": "pong"}
            assert (await admin.post({"subscribers": ["PHID-OTHER"], "n": "after"}))[0] == 200
            async with asyncio.timeout(WAIT):
                assert orjson.loads(await other.recv())["n"] == "after"
        growth = peak_rss_bytes(relay.pid) - before
    finally:
        stalled.close()
        relay.kill()
    # At most the 1 MiB bound and one replay on top of it (1.2 GB before).
    assert growth < 16 * MIB, growth / MIB


async def test_history_keeps_its_byte_bound_across_instances(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """Large posts to several instances used to be kept whole: 4,096 per instance, each."""
    relay = await asyncio.to_thread(start_relay, tmp_path, history={"max_bytes": 4 * MIB})
    admin = Admin(session, relay.admin_ports[0])
    pad = "x" * (200 * 1024)
    try:
        before = rss_bytes(relay.pid)
        for n in range(400):  # 80 MB in all
            body = {"subscribers": ["PHID-BIG"], "n": n, "pad": pad}
            assert (await admin.post(body, instance=f"tenant-{n % 8}"))[0] == 200
        growth = rss_bytes(relay.pid) - before
        # A browser arriving now still replays what its instance kept: its newest.
        replayed: list[int] = []
        async with websockets.connect(f"ws://127.0.0.1:{relay.client_ports[0]}/~tenant-7/") as ws:
            await ws.send(orjson.dumps({"command": "subscribe", "data": ["PHID-BIG"]}).decode())
            await ws.send(orjson.dumps({"command": "replay", "data": {"age": 60_000}}).decode())
            async with asyncio.timeout(WAIT):
                while not replayed or replayed[-1] != 399:
                    replayed.append(orjson.loads(await ws.recv())["n"])
    finally:
        relay.kill()
    assert growth < 30 * MIB, growth / MIB  # 80 MB kept before
    assert replayed == [391, 399]  # a share of the 4 MiB: the last two of its 50
    [bound] = [line for _, line in relay.timed_lines if "history.max_bytes" in line]
    assert " WARNING " in bound


async def test_a_reload_that_lowers_the_outbound_bound_applies_to_connected_browsers(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    relay = await asyncio.to_thread(
        start_relay, tmp_path, limits={"outbound_buffer_bytes": 8 << 20}
    )
    admin = Admin(session, relay.admin_ports[0])
    stalled = await asyncio.to_thread(handshake, relay.client_ports[0], "PHID-STALL", 4096)
    try:
        lowered = local_config(limits={"outbound_buffer_bytes": 64 * 1024})
        relay.config_path.write_bytes(orjson.dumps(lowered))
        relay.signal(signal.SIGHUP)

        async def reloaded() -> bool:
            return any("configuration reloaded" in line for _, line in relay.timed_lines)

        await eventually(reloaded, "the node reloaded")
        pad = "x" * 32_000
        posted = 0
        # Kernel buffers (~256 KiB) plus the new 64 KiB bound are ~10 posts of 32 KB;
        # the old 8 MiB bound would take ~270.
        while not any("stopped reading" in line for _, line in relay.timed_lines):
            assert posted < 60, "the browser connected before the reload kept the old bound"
            status, _ = await admin.post({"subscribers": ["PHID-STALL"], "n": posted, "pad": pad})
            assert status == 200
            posted += 1
            await asyncio.sleep(0)  # let the log follower thread catch up
    finally:
        stalled.close()
        relay.kill()
    line = next(line for _, line in relay.timed_lines if "stopped reading" in line)
    assert "over 65536 bytes queued" in line
