"""Three relay nodes in their own network namespaces, over slow, lossy and cut links.

Slow, delayed and lossy links, a partition and its healing, a restart
mid-traffic: every accepted message arrives once on every node that is
reachable; none arrives twice anywhere.

Needs root (namespaces, veth pairs, tc); where they cannot be made, each test
fails saying why. See tests/peering/namespaces.py for the topology.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from tests.peering.namespaces import Namespaces, node_address, rss_kib, tc_supports_tbf
from tests.support import WAIT, Browser, RelayProcess, eventually, notification

pytestmark = pytest.mark.slow

CLIENT_PORT = 22280
ADMIN_PORT = 22281
#: Where node i reaches node j through its local lossy proxy.
PROXY_BASE = 23000
PROXY = Path(__file__).with_name("lossy_proxy.py")


class Mesh:
    """Three relay nodes, one per namespace, each listing all three; the test's view of them."""

    def __init__(self, tmp_path: Path, namespaces: Namespaces, **peering: Any) -> None:
        self.tmp_path = tmp_path
        self.ns = namespaces
        self.size = len(namespaces.names)
        self.peering = {
            "timeout_seconds": 1.0,
            "backoff_initial_seconds": 0.1,
            "backoff_max_seconds": 2.0,
            **peering,
        }
        self.history: dict[str, Any] = {}
        self.proxied = False
        self.nodes: list[RelayProcess | None] = [None] * self.size
        self.proxies: list[subprocess.Popen[str]] = []
        #: Per browser ever opened: uniqueID -> arrivals, and first arrival times.
        self.tallies: list[dict[str, int]] = []
        self.times: list[dict[str, float]] = []
        #: Each node's current browser, as an index into the lists above.
        self.current: list[int] = [-1] * self.size
        self.browsers: list[Browser] = []
        self._readers: list[asyncio.Task[None]] = []

    def config(self, index: int) -> dict[str, Any]:
        cluster = []
        for peer in range(self.size):
            if self.proxied and peer != index:
                cluster.append({"host": "127.0.0.1", "port": PROXY_BASE + peer, "protocol": "http"})
            else:
                cluster.append({"host": node_address(peer), "port": ADMIN_PORT, "protocol": "http"})
        return {
            "servers": [
                {"type": "client", "port": CLIENT_PORT, "listen": "0.0.0.0"},
                {"type": "admin", "port": ADMIN_PORT, "listen": "0.0.0.0"},
            ],
            "cluster": cluster,
            "peering": self.peering,
            "history": self.history,
        }

    def start_proxies(self, **faults: float) -> None:
        """A lossy proxy in each node's namespace in front of every other node."""
        self.proxied = True
        for index in range(self.size):
            routes = [
                f"--route=127.0.0.1:{PROXY_BASE + peer}={node_address(peer)}:{ADMIN_PORT}"
                for peer in range(self.size)
                if peer != index
            ]
            options = [f"--{name.replace('_', '-')}={value}" for name, value in faults.items()]
            proxy = subprocess.Popen(
                self.ns.command(
                    index, [sys.executable, str(PROXY), *routes, *options, f"--seed={index}"]
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
            self.proxies.append(proxy)
            assert proxy.stdout is not None
            assert proxy.stdout.readline().strip() == "ready"

    def start(self, index: int) -> RelayProcess:
        path = self.tmp_path / f"node{index}.json"
        path.write_bytes(orjson.dumps(self.config(index)))
        node = RelayProcess(path)
        node.args = self.ns.command(index, node.args)
        node.start()
        node.follow_log()
        self.nodes[index] = node
        return node

    async def start_all(self) -> None:
        for index in range(self.size):
            await asyncio.to_thread(self.start, index)
        for index in range(self.size):
            await self.open_browser(index)
        # Discovery: each node posts to every entry of its list once (itself included).
        for index in range(self.size):
            assert (await self.post(index, notification("PHID-WARM", unique_id=f"warm{index}")))[
                0
            ] == 200

        async def settled() -> bool:
            for index in range(self.size):
                links = (await self.status(index))["cluster"]
                states = sorted(link["state"] for link in links)
                if states != ["self"] + ["up"] * (self.size - 1):
                    return False
            return True

        await eventually(settled, "every node knows itself and sees its peers up")

    async def open_browser(self, index: int) -> None:
        """A browser on node ``index`` (replacing its previous one), read from from now on."""
        browser = await self.ns.browser(index, CLIENT_PORT, "PHID-NET")
        self.browsers.append(browser)
        self.tallies.append({})
        self.times.append({})
        self.current[index] = len(self.browsers) - 1
        self._readers.append(asyncio.create_task(self._read(self.current[index])))

    async def _read(self, which: int) -> None:
        tally, times = self.tallies[which], self.times[which]
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in self.browsers[which].ws:
                unique_id = orjson.loads(frame).get("uniqueID")
                if unique_id is None:
                    continue  # a pong
                tally[unique_id] = tally.get(unique_id, 0) + 1
                times.setdefault(unique_id, time.monotonic())

    def seen(self, index: int) -> dict[str, int]:
        """What node ``index``'s current browser received: uniqueID -> times."""
        return self.tallies[self.current[index]]

    def count(self, index: int, prefix: str) -> int:
        return sum(1 for unique_id in self.seen(index) if unique_id.startswith(prefix))

    async def post(self, index: int, body: dict[str, Any]) -> tuple[int, Any]:
        return await self.ns.request(index, ADMIN_PORT, "POST", "/", orjson.dumps(body))

    async def status(self, index: int) -> dict[str, Any]:
        status, body = await self.ns.request(index, ADMIN_PORT, "GET", "/status/")
        assert status == 200
        return body  # type: ignore[no-any-return]

    async def post_many(
        self, ids: list[str], origins: list[int], *, concurrency: int = 8, pad: int = 0
    ) -> dict[str, int]:
        """POST each id (to origins in turn), ``concurrency`` at a time; the status of each."""
        statuses: dict[str, int] = {}
        limit = asyncio.Semaphore(concurrency)

        async def one(n: int, unique_id: str) -> None:
            async with limit:
                body = notification("PHID-NET", unique_id=unique_id, pad="x" * pad)
                statuses[unique_id] = (await self.post(origins[n % len(origins)], body))[0]

        await asyncio.gather(*(one(n, unique_id) for n, unique_id in enumerate(ids)))
        return statuses

    async def all_arrive(
        self, ids: list[str], nodes: list[int], what: str, within: float = WAIT
    ) -> None:
        """Wait (at most ``within`` seconds) until each of ``nodes`` has every one of ``ids``."""
        deadline = time.monotonic() + within
        while True:
            missing = {node: sum(i not in self.seen(node) for i in ids) for node in nodes}
            if not any(missing.values()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting until {what}; missing {missing}")
            await asyncio.sleep(0.02)  # a bounded poll: the browsers' readers fill seen()

    def assert_no_duplicates(self) -> None:
        for which, tally in enumerate(self.tallies):
            twice = {unique_id: n for unique_id, n in tally.items() if n > 1}
            assert not twice, f"browser {which} received these more than once: {twice}"

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        for browser in self.browsers:
            with contextlib.suppress(Exception):
                await browser.close()
        for node in self.nodes:
            if node is not None:
                node.kill()
        for proxy in self.proxies:
            proxy.kill()
            proxy.wait(WAIT)
            if proxy.stdout is not None:
                proxy.stdout.close()


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    made = Namespaces(3)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
async def mesh(tmp_path: Path, namespaces: Namespaces) -> AsyncIterator[Mesh]:
    made = Mesh(tmp_path, namespaces, queue_size=200)
    try:
        yield made
    finally:
        await made.close()


async def test_a_slow_link_delivers_every_accepted_message_once_everywhere(
    mesh: Mesh, namespaces: Namespaces
) -> None:
    tc_supports_tbf(namespaces)
    await mesh.start_all()
    # Node 0 may send 384 kbit/s: ~170 KB for its two peers take it 3.5 s or more,
    # while the posts take about a second: the link, not the poster, sets the pace.
    namespaces.slow(0, "384kbit")
    ids = [f"slow-{n:04d}" for n in range(160)]
    statuses = await mesh.post_many(ids, [0], pad=400)
    accepted = [i for i in ids if statuses[i] == 200]
    refused = [i for i in ids if statuses[i] != 200]
    assert set(statuses.values()) <= {200, 503}
    assert len(accepted) >= 100, f"node 0 accepted only {len(accepted)} of {len(ids)}"
    # At 384 kbit/s the data alone takes 3.5 s, more where the bucket's drops cost TCP
    # retransmissions: a generous bound on the wait, not a pause.
    await mesh.all_arrive(
        accepted, [0, 1, 2], "every accepted message reached every node", within=40
    )
    for index in range(3):
        assert not set(refused) & set(mesh.seen(index)), "a refused post was delivered"
    mesh.assert_no_duplicates()
    # The link really was shaped: the token bucket held packets back.
    shown = await asyncio.to_thread(namespaces.qdisc, 0)
    assert "tbf" in shown
    overlimits = int(shown.split("overlimits ")[1].split()[0])
    assert overlimits > 0, shown


async def test_delay_and_loss_still_deliver_every_message_once(mesh: Mesh) -> None:
    # Every chunk between nodes waits 10 ms; 5% wait 200 ms more; 3% cut the connection.
    await asyncio.to_thread(mesh.start_proxies, delay=0.01, stall=0.05, reset=0.03)
    await mesh.start_all()
    ids = [f"lossy-{n:04d}" for n in range(240)]
    statuses = await mesh.post_many(ids, [0, 1, 2], concurrency=4)
    assert set(statuses.values()) == {200}
    await mesh.all_arrive(ids, [0, 1, 2], "every message reached every node")
    mesh.assert_no_duplicates()
    statuses_now = [await mesh.status(index) for index in range(3)]
    failed = sum(link["failed"] for status in statuses_now for link in status["cluster"])
    assert failed > 0, "the proxies injected no fault: the test proved nothing"


async def test_a_partitioned_node_misses_messages_then_gets_new_ones_after_healing(
    tmp_path: Path, namespaces: Namespaces
) -> None:
    mesh = Mesh(tmp_path, namespaces, queue_size=200)
    mesh.history = {"max_messages": 300}
    try:
        await mesh.start_all()
        before = [f"before-{n:03d}" for n in range(20)]
        await mesh.post_many(before, [0, 1, 2])
        await mesh.all_arrive(before, [0, 1, 2], "every node has the first messages")

        namespaces.cut(2)
        # The others learn node 2 is down when a post to it times out. Until then it
        # is up with a queue that fills, and when_full "refuse" refuses posts on
        # purpose: a few posts first, and the burst once both know.
        during = [f"during-{n:04d}" for n in range(1000)]
        statuses = await mesh.post_many(during[:10], [0, 1])

        async def both_see_it_down() -> bool:
            links = [(await mesh.status(i))["cluster"][2] for i in (0, 1)]
            return all(link["state"] == "down" for link in links)

        await eventually(both_see_it_down, "nodes 0 and 1 see node 2 down")
        # While cut off: nodes 0 and 1 keep taking posts (8 KB each); their queues for
        # node 2 and their histories are bounded, so their memory must level off.
        pids = [mesh.nodes[i].pid for i in (0, 1)]  # type: ignore[union-attr]
        statuses |= await mesh.post_many(during[10:300], [0, 1], pad=8000)
        rss_early = [rss_kib(pid) for pid in pids]
        statuses |= await mesh.post_many(during[300:], [0, 1], pad=8000)
        rss_late = [rss_kib(pid) for pid in pids]
        assert set(statuses.values()) == {200}, "a peer that is down must not refuse posts"
        await mesh.all_arrive(during, [0, 1], "nodes 0 and 1 have every message")
        assert mesh.count(2, "during-") == 0, "node 2 was cut off"
        for pid, early, late in zip(pids, rss_early, rss_late, strict=True):
            # 700 more 8 KB messages: unbounded queues would hold over 11 MB more.
            assert late - early < 4096, f"node {pid} grew {late - early} KiB while cut off"
        for index in (0, 1):
            link = (await mesh.status(index))["cluster"][2]
            assert link["state"] == "down"
            assert link["queue"] <= 200
            assert link["dropped"] > 0

        namespaces.heal(2)
        healed = time.monotonic()
        after: list[str] = []

        async def new_message_arrived() -> bool:
            unique_id = f"after-{len(after):03d}"
            after.append(unique_id)
            assert (await mesh.post(len(after) % 2, notification("PHID-NET", unique_id=unique_id)))[
                0
            ] == 200
            return mesh.count(2, "after-") > 0

        await eventually(new_message_arrived, "node 2 receives new messages after healing")
        times = mesh.times[mesh.current[2]]
        first = min(t for i, t in times.items() if i.startswith("after-"))
        ceiling = mesh.peering["backoff_max_seconds"] + mesh.peering["timeout_seconds"]
        assert first - healed <= ceiling + 0.5, f"{first - healed:.2f} s after healing"
        await mesh.all_arrive(after, [0, 1, 2], "every node has every message sent after healing")
        mesh.assert_no_duplicates()
    finally:
        await mesh.close()


async def test_a_node_restarted_mid_traffic_rejoins_and_nothing_is_doubled(mesh: Mesh) -> None:
    await mesh.start_all()
    ids = [f"flow-{n:04d}" for n in range(300)]

    async def restart_node_2() -> None:
        async def flowing() -> bool:
            return mesh.count(0, "flow-") >= 100

        await eventually(flowing, "traffic is flowing")
        node = mesh.nodes[2]
        assert node is not None
        node.signal(signal.SIGTERM)
        await asyncio.to_thread(node.wait)
        await asyncio.to_thread(mesh.start, 2)
        await mesh.open_browser(2)

    restart = asyncio.create_task(restart_node_2())
    statuses = await mesh.post_many(ids, [0, 1], concurrency=2)
    await restart
    assert set(statuses.values()) == {200}
    await mesh.all_arrive(ids, [0, 1], "the nodes that stayed up have every message")

    async def node_2_up_again() -> bool:
        states = [(await mesh.status(i))["cluster"][2]["state"] for i in (0, 1)]
        return states == ["up", "up"]

    await eventually(node_2_up_again, "nodes 0 and 1 see node 2 up again")
    later = [f"later-{n:03d}" for n in range(30)]
    await mesh.post_many(later, [0, 1, 2])
    await mesh.all_arrive(later, [0, 1, 2], "the restarted node gets new messages")
    mesh.assert_no_duplicates()


@pytest.mark.parametrize("cut", ["link", "node"])
async def test_a_senders_messages_arrive_in_order_across_a_partition_and_its_healing(
    mesh: Mesh, namespaces: Namespaces, cut: str
) -> None:
    """Node 0's posts reach node 2's browser in the order they were posted, each once.

    ``link``: only nodes 0 and 2 lose each other, so node 1 carries node 0's
    messages to node 2 meanwhile. ``node``: node 2 loses everyone, so nodes 0
    and 1 both queue for it. Either way the first posts are on their way to
    node 2 when the cut happens, and node 0 learns of it only when they time
    out: every other node was told node 0 sends those itself.
    """
    await mesh.start_all()
    ids = [f"order-{n:04d}" for n in range(80)]

    async def post_in_turn(chunk: list[str]) -> None:
        for unique_id in chunk:  # one after the other: the order they are posted in
            assert (await mesh.post(0, notification("PHID-NET", unique_id=unique_id)))[0] == 200

    async def sees_node_2_down(index: int) -> bool:
        return bool((await mesh.status(index))["cluster"][2]["state"] == "down")

    if cut == "link":
        namespaces.sever(0, 2)
    else:
        namespaces.cut(2)
    await post_in_turn(ids[:3])
    await eventually(lambda: sees_node_2_down(0), "node 0 sees node 2 down")
    await post_in_turn(ids[3:60])
    if cut == "link":
        await mesh.all_arrive(ids[3:60], [2], "node 1 carried node 0's later posts to node 2")
        namespaces.mend(0, 2)
    else:
        await eventually(lambda: sees_node_2_down(1), "node 1 sees node 2 down")
        namespaces.heal(2)
    await post_in_turn(ids[60:])
    await mesh.all_arrive(ids, [0, 1, 2], "every node has every post", within=20)
    for index in range(3):
        arrived = [unique_id for unique_id in mesh.seen(index) if unique_id.startswith("order-")]
        assert arrived == ids, f"node {index}'s browser got node 0's posts out of order"
    mesh.assert_no_duplicates()
