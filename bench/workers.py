"""Load-generator processes: browsers that receive, application servers that post.

Each worker is its own process with its own event loop (uvloop), so the load
generator never shares relay's loop nor a core's worth of Python with it. The
coordinator talks to a worker over a multiprocessing pipe: the worker sets up
(connects), reports ``ready``, and then does what each command says.

Commands to a browser worker: ``finish`` (barrier, then tally what arrived)
and ``close``. Commands to a poster: ``go`` (post, then report) and ``close``.
A joiner (``bench.joiner``) opens browsers one after another while a node
changes hands.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from bench.agent import Agent
from bench.httpclient import PostConnection
from bench.joiner import JoinerAgent
from bench.sources import owner_of, source_for
from bench.wsclient import LeanBrowser, Tally, subscribe_frame, unique_id

#: Browsers a worker connects at once; more would overflow relay's accept backlog.
CONNECT_CONCURRENCY = 256
#: Longest a browser worker waits for its connections to be set up.
CONNECT_TIMEOUT = 120.0
#: How much posters are favoured over the other processes (needs root, ignored otherwise).
POSTER_BOOST = 5
#: A browser worker stops waiting for missing messages after this long without any.
QUIESCENCE = 3.0
#: How often a worker checks whether every expected message has arrived.
COMPLETION_POLL = 0.02


def run_worker(conn: Connection, spec: dict[str, Any]) -> None:
    """Entry point of a worker process: run the role named in ``spec`` on uvloop."""
    import uvloop

    if spec["role"] == "poster" and spec.get("rate"):
        # A posting schedule is the offered load: when the machine is saturated,
        # let browsers fall behind rather than the posts. (Posting flat out is not
        # favoured: preempting relay at every answer would slow it down.)
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) - POSTER_BOOST)

    if spec["role"] == "browsers" and spec.get("yield_cpu"):
        # Browsers whose arrival the kernel stamps need not be read at once: they
        # yield the CPU to the nodes, as remote browsers would not take it at all.
        with contextlib.suppress(OSError):
            os.setpriority(
                os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + spec["yield_cpu"]
            )

    agent: Agent
    if spec["role"] == "joiner":
        agent = JoinerAgent(conn, spec)
    elif spec["role"] == "browsers":
        agent = BrowserAgent(conn, spec)
    else:
        agent = PosterAgent(conn, spec)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(agent.run())
    except Exception:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def _within(command: dict[str, Any], ranges: list[tuple[int, ...]]) -> list[int]:
    """The command's excluded posts (not answered 200) that fall in ``ranges``."""
    return [s for s in command.get("excluded", ()) if any(lo <= s < hi for lo, hi in ranges)]


class BrowserAgent(Agent):
    """Browsers in groups (one group per node and key set); each group keeps one tally."""

    def __init__(self, conn: Connection, spec: dict[str, Any]) -> None:
        """Serve ``conn`` for the browser groups in ``spec``."""
        super().__init__(conn, spec)
        self.groups: dict[str, list[LeanBrowser]] = {}
        self.tallies: dict[str, Tally] = {}
        #: Each group's connected browsers by index (for posts to one browser's own key).
        self.indexed: dict[str, dict[int, LeanBrowser]] = {}

    async def setup(self) -> dict[str, Any]:
        """Connect every browser of every group; subscribed and confirmed by a pong each.

        A group's ``sources`` (loopback addresses) split its browsers evenly. With
        the spec's ``count_failures``, a browser that cannot connect is counted
        (by error) rather than failing the worker.
        """
        started = time.monotonic()
        limit = asyncio.Semaphore(self.spec.get("connect_concurrency", CONNECT_CONCURRENCY))
        tag, seen_size = self.spec["tag"], self.spec["seen_size"]
        kernel_stamps = bool(self.spec.get("kernel_stamps"))
        failures: dict[str, int] = {}
        examples: list[str] = []

        async def one(group: dict[str, Any], offset: int) -> LeanBrowser:
            keys = [key.format(index=group.get("first_index", 0) + offset) for key in group["keys"]]
            sources = group.get("sources")
            async with limit:
                return await LeanBrowser.connect(
                    group["port"],
                    group.get("path", "/"),
                    subscribe_frame(keys),
                    tag,
                    seen_size,
                    self.tallies[group["name"]],
                    source_for(offset, group["count"], tuple(sources)) if sources else None,
                    kernel_stamps,
                )

        tolerate = bool(self.spec.get("count_failures"))
        async with asyncio.timeout(self.spec.get("connect_timeout", CONNECT_TIMEOUT)):
            for group in self.spec["groups"]:
                self.tallies[group["name"]] = Tally(keep_sent=bool(self.spec.get("keep_sent")))
                first = group.get("first_index", 0)
                done = await asyncio.gather(
                    *(one(group, i) for i in range(group["count"])), return_exceptions=tolerate
                )
                browsers = self.groups[group["name"]] = []
                indexed = self.indexed[group["name"]] = {}
                for offset, browser in enumerate(done):
                    if isinstance(browser, LeanBrowser):
                        browsers.append(browser)
                        indexed[first + offset] = browser
                    else:
                        failures[type(browser).__name__] = (
                            failures.get(type(browser).__name__, 0) + 1
                        )
                        # A few messages say why (the class alone did not).
                        if len(examples) < 3 and str(browser) not in examples:
                            examples.append(str(browser)[:200])
        count = sum(len(browsers) for browsers in self.groups.values())
        return {
            "ready": count,
            "failed": failures,
            "failed_examples": examples,
            "seconds": time.monotonic() - started,
        }

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        """``finish``: wait until every expected message arrived (bounded), then tally.

        Every browser expects every post, unless the command names an ``owner``
        addressing (``bench.sources.owner_of``): then each post is for one browser.
        With ``owner_ranges`` too, ``expected`` are for every browser and
        ``owner_ranges`` for one each (a shared key and own keys at once).
        """
        deadline = time.monotonic() + command["timeout"]
        browsers = [b for group in self.groups.values() for b in group]
        ranges = [tuple(r) for r in command["expected"]]
        owner_ranges = [tuple(r) for r in command.get("owner_ranges", ())]
        if command.get("owner") and not owner_ranges:
            ranges, owner_ranges = [], ranges
        owned = self._owned(owner_ranges, command) if owner_ranges else None
        target = sum(len(mine) for mine in owned.values()) if owned is not None else 0
        if ranges:
            expected_each = sum(hi - lo for lo, hi in ranges) - len(_within(command, ranges))
            target += expected_each * len(browsers)
        await self._arrived(target, deadline)
        if command.get("barrier"):
            # relay hands a message to every recipient's connection before it answers
            # the POST, and each connection writes in order: a pong asked for after
            # the last answer comes after every message. Asked only once the messages
            # came (or stopped coming): 20,000 pings sent at once with the last answer
            # made relay answer them amid the last post's fan-out, and that post's
            # p99 was 1.4 s against 0.3-0.7 s for the others.
            remaining = max(0.0, deadline - time.monotonic())
            try:
                async with asyncio.timeout(remaining):
                    await asyncio.gather(*(b.ping() for b in browsers if not b.closed))
            except TimeoutError:
                pass
        return {
            "groups": {
                name: self._report(name, ranges, command, None if owned is None else owned[name])
                for name in self.groups
            }
        }

    async def _arrived(self, target: int, deadline: float) -> None:
        """Wait until ``target`` messages arrived, none arrived for a while, or ``deadline``."""
        # Messages relay chose to drop never come: stop once nothing has arrived for a while.
        received = sum(t.received for t in self.tallies.values())
        changed = time.monotonic()
        while received < target:
            now = time.monotonic()
            if now >= deadline or now - changed >= QUIESCENCE:
                return
            await asyncio.sleep(COMPLETION_POLL)  # a bounded poll of the tallies
            latest = sum(t.received for t in self.tallies.values())
            if latest != received:
                received, changed = latest, time.monotonic()

    def _owned(
        self, ranges: list[tuple[int, ...]], command: dict[str, Any]
    ) -> dict[str, list[tuple[int, LeanBrowser]]]:
        """Per group, each expected post addressed to one of its connected browsers."""
        owner, excluded = command["owner"], set(command.get("excluded", ()))
        owned: dict[str, list[tuple[int, LeanBrowser]]] = {name: [] for name in self.groups}
        for lo, hi in ranges:
            for seq in range(lo, hi):
                if seq in excluded:
                    continue
                index = owner_of(seq, owner["base"], owner["stride"], owner["browsers"])
                for name, indexed in self.indexed.items():
                    browser = indexed.get(index)
                    if browser is not None:
                        owned[name].append((seq, browser))
        return owned

    def _report(
        self,
        name: str,
        ranges: list[tuple[int, ...]],
        command: dict[str, Any],
        owned: list[tuple[int, LeanBrowser]] | None,
    ) -> dict[str, Any]:
        tally = self.tallies[name]
        excluded = _within(command, ranges)
        lost = 0
        closed = 0
        for browser in self.groups[name]:
            seen = browser.seen
            lost += sum(seen[lo:hi].count(0) for lo, hi in ranges)
            lost -= sum(1 for seq in excluded if not seen[seq])
            closed += browser.closed
        if owned is not None:
            lost += sum(1 for seq, browser in owned if not browser.seen[seq])
        report = {
            "browsers": len(self.groups[name]),
            "received": tally.received,
            "lost": lost,
            "duplicated": tally.dups,
            "malformed": tally.malformed,
            "foreign": tally.foreign,
            "closed": closed,
            "disordered": tally.disordered,
            "last": tally.last,
            "latencies_ns": tally.latencies_ns.tobytes(),
            "arrivals_ns": tally.arrivals_ns.tobytes(),
            "exact_arrivals_ns": tally.exact_arrivals_ns.tobytes(),
            "sent_ns": b"" if tally.sent_ns is None else tally.sent_ns.tobytes(),
        }
        # Each finish reports only what arrived since the previous one.
        self.tallies[name] = fresh = Tally(keep_sent=tally.sent_ns is not None)
        for browser in self.groups[name]:
            browser.tally = fresh
        return report

    def teardown(self) -> None:
        """Drop every connection at once (RST): no TIME_WAIT left to slow the next scenario."""
        for group in self.groups.values():
            for browser in group:
                browser.abort()


#: A post answered later than this (seconds) is reported with its seq and times.
SLOW_POST = 0.5


class PosterAgent(Agent):
    """An application server posting notifications, at a rate or as fast as it can.

    At a rate, ``burst`` posts (default 1) leave together, each on its own
    connection, as several application servers posting at once.
    """

    def __init__(self, conn: Connection, spec: dict[str, Any]) -> None:
        """Serve ``conn``, posting as ``spec`` says."""
        super().__init__(conn, spec)
        self.connections: list[PostConnection] = []
        # Posts to one key share their prefix; posts to own keys build theirs.
        self._prefix = None if spec.get("owner") else self._prefix_for(spec["seq_base"])
        # Fixed-width fields (own keys too) make every body exactly ``body_bytes`` long.
        self._pad = b""
        self._pad = b"x" * max(0, spec["body_bytes"] - len(self._body(spec["seq_base"], 0)))

    def _prefix_for(self, seq: int) -> bytes:
        """The body up to the uniqueID, for the spec's ``key`` or one browser's own key."""
        owner = self.spec.get("owner")
        if owner is None:
            key = self.spec["key"]
        else:
            index = owner_of(seq, self.spec["seq_base"], owner["stride"], owner["browsers"])
            key = str(owner["pattern"]).format(index=index)
        return (
            f'{{"key":"{key}","type":"notification","subscribers":["{key}"],"uniqueID":"'
        ).encode()

    def _body(self, seq: int, now_ns: int) -> bytes:
        prefix = self._prefix or self._prefix_for(seq)
        uid = unique_id(self.spec["tag"], seq).encode()
        return b'%s%s","t":"%020d","pad":"%s"}' % (prefix, uid, now_ns, self._pad)

    async def setup(self) -> dict[str, Any]:
        """Open the keep-alive connections."""
        path = self.spec.get("path", "/")
        self.connections = [
            await PostConnection.open(self.spec["port"], path)
            for _ in range(self.spec["connections"])
        ]
        return {"ready": len(self.connections)}

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        """``go``: post until ``max_posts`` are out or ``duration`` is over, then report."""
        spec = self.spec
        base, max_posts, rate = spec["seq_base"], spec["max_posts"], spec.get("rate")
        burst = spec.get("burst", 1)
        started = time.monotonic()
        stop_at = started + spec["duration"]
        issued = 0
        failed: list[int] = []
        statuses: dict[int, int] = {}
        # Posts answered late: with several in flight, one held up can be overtaken by the next.
        slow: list[list[float]] = []

        async def send(connection: PostConnection, seq: int) -> None:
            sent = time.monotonic()
            # CLOCK_REALTIME, as the kernel's receive stamps the browsers compare it with.
            body = self._body(seq, time.time_ns())
            try:
                if spec.get("fresh"):
                    # A connection per post, as Phorge's application servers post: a
                    # keep-alive one would see the server that accepted it go away.
                    connection = await PostConnection.open(spec["port"], spec.get("path", "/"))
                    try:
                        status = await connection.post(body)
                    finally:
                        connection.close()
                else:
                    status = await connection.post(body)
            except OSError:  # ConnectionError, and a refused connect in fresh mode
                status = 0
            statuses[status] = statuses.get(status, 0) + 1
            if status != 200:
                failed.append(seq)
            if time.monotonic() - sent > SLOW_POST:
                slow.append([seq, round(sent - started, 3), round(time.monotonic() - sent, 3)])

        async def as_fast_as_possible(connection: PostConnection) -> None:
            nonlocal issued
            while issued < max_posts and time.monotonic() < stop_at:
                seq = base + issued
                issued += 1
                await send(connection, seq)

        async def paced(rate: float) -> None:
            nonlocal issued
            idle: asyncio.Queue[PostConnection] = asyncio.Queue()
            for connection in self.connections:
                idle.put_nowait(connection)
            pending: set[asyncio.Task[None]] = set()

            async def send_and_release(connection: PostConnection, seq: int) -> None:
                await send(connection, seq)
                idle.put_nowait(connection)

            while issued < max_posts:
                # Posts leave ``burst`` at a time: as many application servers posting at once.
                due = started + (issued - issued % burst) / rate
                # Stop at the end of the schedule, or when far behind it.
                if due >= stop_at or time.monotonic() >= stop_at + spec["duration"]:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                connection = await idle.get()
                task = asyncio.create_task(send_and_release(connection, base + issued))
                pending.add(task)
                task.add_done_callback(pending.discard)
                issued += 1
            if pending:
                await asyncio.gather(*pending)

        timeout = spec["duration"] + 30.0
        async with asyncio.timeout(timeout):
            if rate:
                await paced(rate)
            else:
                await asyncio.gather(*(as_fast_as_possible(c) for c in self.connections))
        ended = time.monotonic()
        return {
            "issued": issued,
            "ok": statuses.get(200, 0),
            "statuses": statuses,
            "failed": failed,
            "slow": slow,
            "seq_base": base,
            "started": started,
            "ended": ended,
        }

    def teardown(self) -> None:
        """Close the connections."""
        for connection in self.connections:
            connection.close()
