"""A successor killed half-way through a handoff: no browser is left stranded.

The old relay waits, after its first pass, for browsers still in their
handshake (here one whose upgrade request has not come yet): a real pause in
which the new process has adopted every open plain browser and the rest are
still the old one's. The test kills the new process (SIGKILL) there, so the
honest expectation is exactly:

- the browsers it adopted are lost with it: each sees its connection end,
  reconnects (to the same port, where the old process accepts again) and
  replays what it missed from the old process' history;
- the browsers not passed (compressed ones, which cannot move, and the one in
  its handshake) stay with the old process and see nothing;
- posts are accepted throughout; every browser gets every post.

The same in broker mode, on a real redis-server.

The other way round, the old process gives up while its successor lives: the
successor is stopped (SIGSTOP) before the old process says ``DONE``, so the
old process' wait for its answer times out, as on a loaded box. The old one
says ``ABORT`` and serves again (admin sockets included) only once the
successor cannot serve beside it:

- woken (SIGCONT), the successor reads ``ABORT``, says ``RELEASED`` and exits
  1, never having accepted on the admin sockets passed to it (posts wait in
  their backlog until the handoff is done): the browsers it adopted are
  closed (1001) and come back to the old process, the others see nothing;
- left stopped (hung), it is killed by the old process ``RELEASE_SECONDS``
  later: the browsers it adopted lose their connection with it (1006) and
  come back the same way.

And the old process lost half-way, killed or stopped for good (then its
successor kills it once it has said nothing for longer than it ever does
while it works): the successor serves on alone, the browsers it adopted see
nothing, the others reconnect to it.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest
import websockets

from relay.node.handoff_abort import RELEASE_SECONDS
from tests.broker.test_broker_cluster import BROKER_TIMING
from tests.harness.cluster import Cluster, Relays
from tests.harness.node import RelayNode
from tests.node.handoff_parts import (
    RATE,
    Poster,
    Watcher,
    close_all,
    connect_many,
    pooled_connection,
    post_over,
    read_status,
)
from tests.redis_harness import RedisServer
from tests.support import WAIT, eventually, local_config

#: Plain browsers: the new process adopts them all before it is killed.
ADOPTED = 200
#: Browsers with permessage-deflate: they cannot move, the old process keeps them.
COMPRESSED = 10
#: ``limits.handoff_answer_seconds`` of both processes: the tests that wait for a
#: side to give up wait this long, not the default 30 s (answers take milliseconds).
ANSWER_SECONDS = 6.0
#: ``limits.handshake_seconds``: the browser in its handshake holds the handoff
#: open this long, until the test has stopped or killed a process.
HANDSHAKE_SECONDS = 60.0
#: The same where a successor waits for a hung old process: it waits this (the old
#: one's wait for the browser), plus 3 s, plus its answer deadline, before it kills it.
SHORT_HANDSHAKE_SECONDS = 4.0


def _node(
    relays: Relays,
    tmp_path: Path,
    name: str,
    *args: str,
    redis_url: str | None = None,
    handshake_seconds: float = HANDSHAKE_SECONDS,
) -> RelayNode:
    limits = {
        "max_connections_per_ip": 0,
        "handshake_seconds": handshake_seconds,
        "handoff_answer_seconds": ANSWER_SECONDS,
        # Room for an admin connection passed on, silent through a failed handoff.
        "admin_header_seconds": 30.0,
    }
    config = local_config(limits=limits, browsers={"compression": True})
    if redis_url is not None:
        config["broker"] = {"url": redis_url, **BROKER_TIMING}
    node = RelayNode(name, tmp_path / name, config, host="127.0.0.1", args=args)
    relays.clusters.append(Cluster("mesh", [node]))  # stopped at the end of the test
    return node


class _HalfWay(NamedTuple):
    """A handoff held open half-way: the new process adopted every plain browser."""

    old: RelayNode
    new: RelayNode
    #: Accepted by the old process before the others; its upgrade request has not come.
    late: socket.socket
    plain: list[Watcher]
    compressed: list[Watcher]
    #: Posting to the old process since before the handoff began (None: no poster).
    poster: Poster | None


async def _half_way(
    relays: Relays,
    tmp_path: Path,
    *,
    redis_url: str | None = None,
    posting: bool = True,
    handshake_seconds: float = HANDSHAKE_SECONDS,
) -> _HalfWay:
    """Start the old process with browsers, then its successor; return once half-way."""
    handoff = str(tmp_path / "handoff.sock")
    old = _node(
        relays,
        tmp_path,
        "old",
        "--handoff-socket",
        handoff,
        redis_url=redis_url,
        handshake_seconds=handshake_seconds,
    )
    old.start()
    # Connected first, so the old process has accepted it before the others;
    # its upgrade request comes only after the failure.
    late = socket.create_connection(("127.0.0.1", old.client_port))
    plain = await connect_many(old.client_port, ADOPTED)
    compressed = await connect_many(old.client_port, COMPRESSED, compression="deflate")
    poster = Poster(old.admin_port) if posting else None
    new = _node(
        relays,
        tmp_path,
        "new",
        "--handoff-socket",
        handoff,
        "--take-over",
        redis_url=redis_url,
        handshake_seconds=handshake_seconds,
    )
    new.spawn()  # never ready: it says READY=1 only once the handoff is done
    await asyncio.to_thread(
        old.wait_for_log,
        rf"{ADOPTED} browser connections moved; waiting up to {handshake_seconds:g} s for 1 ",
    )
    return _HalfWay(old, new, late, plain, compressed, poster)


async def _come_back(old: RelayNode, plain: list[Watcher]) -> list[Watcher]:
    """Wait for each adopted browser to see its connection end; it comes back and replays."""
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(watcher.task for watcher in plain))
    back = await asyncio.gather(*(Watcher.open(old.client_port) for _ in plain))
    for before, after in zip(plain, back, strict=True):
        await after.replay(before.last_heard)
    return back


async def _served_here(
    old: RelayNode,
    poster: Poster,
    plain: list[Watcher],
    back: list[Watcher],
    compressed: list[Watcher],
    finished: Watcher,
    closed_with: int | None = None,
) -> list[Watcher]:
    """Every browser got every post it should have from ``old``, which serves them all now.

    ``closed_with``: the close code the adopted browsers saw (None: not checked).
    Returns every browser connected now.
    """
    everyone = [*back, *compressed, finished]

    # In broker mode a post is answered once Redis has it, and delivered when Redis returns it.
    async def delivered() -> bool:
        return all(watcher.ids[-1:] == poster.posted[-1:] for watcher in everyone)

    await eventually(delivered, "every browser got the last post")
    for watcher in everyone:
        await watcher.sync()
    assert not poster.failures
    for before, after in zip(plain, back, strict=True):
        assert before.ended is not None  # lost with the successor
        if closed_with is not None:
            assert before.ws.close_code == closed_with
        assert set(before.ids + after.ids) == set(poster.posted)
    for watcher in compressed:
        assert watcher.ended is None
        assert watcher.ids == poster.posted  # served by the old process throughout
    # The late browser subscribed after the failure: the tail of the posts, once each.
    assert finished.ended is None
    assert finished.ids == poster.posted[len(poster.posted) - len(finished.ids) :]
    status = await read_status(old.admin_port)
    assert status["clients.active"] == len(everyone)
    assert status["process"]["pid"] == old.pid
    return everyone


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("mode", "stop"), [("mesh", "SIGKILL"), ("broker", "SIGKILL"), ("mesh", "SIGTERM")]
)
async def test_a_successor_killed_half_way_strands_no_browser(
    relays: Relays, tmp_path: Path, mode: str, stop: str, request: pytest.FixtureRequest
) -> None:
    """SIGTERM too: finishing the take-over and then stopping took the whole node down."""
    redis_url = None
    if mode == "broker":
        redis_url = request.getfixturevalue("redis_server").url
    old, new, late, plain, compressed, poster = await _half_way(
        relays, tmp_path, redis_url=redis_url
    )
    assert poster is not None
    new.signal(signal.Signals[stop])
    await asyncio.to_thread(old.wait_for_log, "handoff failed, this process keeps serving")
    if stop == "SIGTERM":
        assert await asyncio.to_thread(new.wait) == 0
        assert "asked to stop while taking over: giving the browsers back" in new.log
    assert f"{ADOPTED} connections had moved, 0 resumed here" in old.log
    back = await _come_back(old, plain)  # as Phorge's client does
    finished = await Watcher.open(old.client_port, sock=late)
    await asyncio.sleep(10 / RATE)  # a few more posts, all to the old process
    await poster.stop()
    everyone = await _served_here(old, poster, plain, back, compressed, finished)
    assert re.search(r"handoff failed.*: the successor closed the handoff channel", old.log)
    await close_all(everyone)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_posts_queued_for_an_absent_redis_keep_the_old_process_serving(
    relays: Relays, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis goes away half-way: DONE would end the process holding its queue for Redis."""
    old, new, late, plain, compressed, poster = await _half_way(
        relays, tmp_path, redis_url=redis_server.url
    )
    assert poster is not None
    other = _node(relays, tmp_path, "other", redis_url=redis_server.url).start()
    elsewhere = await Watcher.open(other.client_port)
    # Answered before it listened: not its to get (but for the one post in flight then).
    subscribed = len(poster.posted) + 1
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)  # connected, but nothing answers
    try:

        async def queued() -> bool:
            broker = (await read_status(old.admin_port))["broker"]
            return bool(broker["state"] == "down" and broker["queue"] >= 3)

        await eventually(queued, "the old process queued posts for the absent Redis")
        # Its handshake done, the old process would say DONE: its queue holds it back.
        finished = await Watcher.open(old.client_port, sock=late)
        await asyncio.to_thread(old.wait_for_log, "handoff failed, this process keeps serving")
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    assert re.search(r"handoff failed.*posts queued for it after 5 s, which would be lost", old.log)
    assert await asyncio.to_thread(new.wait) == 1
    # The late browser moved too before the failure: it comes back with the others.
    # The late browser moved too before the failure: it comes back with the others (what
    # it replays may meet a live post on the way, so it is not among those checked below).
    back = await _come_back(old, [*plain, finished])
    await close_all([back.pop()])
    fresh = await Watcher.open(old.client_port)  # stays with the old process from now on
    await asyncio.sleep(10 / RATE)  # a few more posts, all to the old process
    await poster.stop()
    everyone = await _served_here(old, poster, plain, back, compressed, fresh)

    # The other node got them all too, once Redis was back: none died with a process.
    async def there() -> bool:
        return elsewhere.ids[-1:] == poster.posted[-1:]

    await eventually(there, "the other node got the last post")
    await elsewhere.sync()
    first = poster.posted.index(elsewhere.ids[0])
    assert first <= subscribed
    assert elsewhere.ids == poster.posted[first:]  # those queued while Redis was away too
    await close_all([*everyone, elsewhere])


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("successor", ["wakes", "hangs"])
async def test_an_old_process_that_recovers_leaves_no_successor_serving(
    relays: Relays, tmp_path: Path, successor: str
) -> None:
    old, new, late, plain, compressed, poster = await _half_way(relays, tmp_path)
    assert poster is not None
    new.signal(signal.SIGSTOP)
    # An application server's connection, opened now and used only after the
    # failure: the old process passes it on with its admin sockets, unused...
    pooled = await pooled_connection(old.admin_port)
    # Its handshake done, the old process hands its admin sockets over and says DONE;
    # no DONE comes back.
    url = f"ws://127.0.0.1:{old.client_port}/"

    async def connect_late() -> websockets.ClientConnection:
        return await websockets.connect(url, ping_interval=None, sock=late)

    opening = asyncio.create_task(connect_late())
    failed = "handoff failed, this process keeps serving: no answer"
    await asyncio.to_thread(old.wait_for_log, failed, timeout=ANSWER_SECONDS + WAIT)
    if successor == "wakes":
        new.signal(signal.SIGCONT)
        assert await asyncio.to_thread(new.wait) == 1
        assert "the old process gave up on the handoff at its end" in new.log
        assert "the successor released the 0 batches" in old.log
        closed_with = 1001  # closed by the successor, not lost with it
    else:
        killed = rf"the successor \(pid {new.pid}\) neither released 0 batches .* killing it"
        await asyncio.to_thread(old.wait_for_log, killed, timeout=RELEASE_SECONDS + WAIT)
        assert await asyncio.to_thread(new.wait) == -signal.SIGKILL
        closed_with = 1006  # lost with it
    assert "waiting for a successor" not in new.log  # the old one's socket is left alone
    # Nor did it take a post: one it took would have reached no browser (the old
    # process' history never had it), as it did now and then when it accepted
    # on the admin sockets as soon as they were passed.
    assert "admin listener ready" not in new.log
    await asyncio.to_thread(old.wait_for_log, f"{ADOPTED} connections had moved, 0 resumed here")
    # The browsers it adopted were closed, and come back to the old process.
    back = await _come_back(old, plain)
    # The late one stayed with the old process: served on the same connection.
    ws = await opening
    await ws.send(orjson.dumps({"command": "subscribe", "data": ["K"]}).decode())
    finished = Watcher(ws)
    await finished.sync()
    await asyncio.sleep(10 / RATE)  # a few more posts, all to the old process
    await poster.stop()
    everyone = await _served_here(old, poster, plain, back, compressed, finished, closed_with)
    # ... and serves it again itself.
    with pooled:
        assert await asyncio.to_thread(post_over, pooled, "pooled") == 200
    for watcher in everyone:
        await watcher.sync()
        assert watcher.ids[-1] == "pooled"
    await close_all(everyone)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("old_process", ["dies", "hangs"])
async def test_a_successor_whose_old_process_dies_or_hangs_half_way_serves_on(
    relays: Relays, tmp_path: Path, old_process: str
) -> None:
    old, new, late, plain, compressed, _ = await _half_way(
        relays, tmp_path, posting=False, handshake_seconds=SHORT_HANDSHAKE_SECONDS
    )
    if old_process == "dies":
        old.signal(signal.SIGKILL)  # as an out-of-memory kill would, half-way
        ended = "died"
    else:
        old.signal(signal.SIGSTOP)  # alive, but it will never say another word
        quiet = SHORT_HANDSHAKE_SECONDS + 3 + ANSWER_SECONDS
        hung = rf"the old process \(pid {old.pid}\) has said nothing for {quiet:g} s .* killing"
        await asyncio.to_thread(new.wait_for_log, hung, timeout=quiet + WAIT)
        ended = "was killed"
    assert await asyncio.to_thread(old.wait) == -signal.SIGKILL
    died = rf"the old process \(pid {old.pid}\) {ended} during the handoff.*{ADOPTED} browser"
    await asyncio.to_thread(new.wait_for_log, died)
    # The admin port is bound afresh: the configured one in production, one
    # the OS picks here (the test's configs say port 0).
    ready = r"admin listener ready on http://127\.0\.0\.1:(\d+)"
    await asyncio.to_thread(new.wait_for_log, ready)
    admin = int(re.findall(ready, new.log)[-1])
    poster = Poster(admin)

    async def new_posts_accepted() -> bool:
        return len(poster.posted) >= 10

    await eventually(new_posts_accepted, "the new process accepted 10 posts")
    await poster.stop()
    assert not poster.failures
    after = poster.posted

    async def delivered() -> bool:
        return all(watcher.ids[-1:] == after[-1:] for watcher in plain)

    await eventually(delivered, "every adopted browser got the last post")
    for watcher in plain:
        await watcher.sync()
        assert watcher.ended is None  # never noticed that the old process died
        assert watcher.ids[-len(after) :] == after
    # Those the old process still held lost their connection with it, and
    # reconnect where the new process accepts.
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(watcher.task for watcher in compressed))
    back = await asyncio.gather(*(Watcher.open(old.client_port) for _ in compressed))
    status = await read_status(admin)
    assert status["process"]["pid"] == new.pid
    assert status["process"]["adopted"] == ADOPTED
    assert status["clients.active"] == ADOPTED + len(back)
    late.close()
    await close_all([*plain, *back])
