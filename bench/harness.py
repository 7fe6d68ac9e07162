"""The coordinator's side of a scenario: start nodes and workers, drive them, measure.

The coordinator itself does no load: it starts relay nodes (``bench.server``)
and load-generator processes (``bench.workers``), tells them when to go, and
reads the nodes' CPU time and memory from /proc around the measured window.
Everything it starts is stopped when the scenario ends, however it ends.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np

from bench import procfs
from bench.server import AphlictNode, RedisProcess, RelayNode, aphlict_config
from bench.workers import run_worker

#: Longest a worker may take to become ready (connecting 20,000 browsers included).
READY_TIMEOUT = 150.0
#: Longest a worker may take to exit when told to close.
CLOSE_TIMEOUT = 10.0
#: File descriptors a node needs besides its browsers (listeners, loop, log, stdio).
FD_MARGIN = 32

_SPAWN = multiprocessing.get_context("spawn")


def _progress(what: str, since: float) -> None:
    print(f"    {what} in {time.monotonic() - since:.1f} s", file=sys.stderr, flush=True)


class WorkerError(RuntimeError):
    """A load-generator process failed or did not answer in time."""


class Worker:
    """One load-generator process and the pipe to it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        """Start a worker process for ``spec`` (see ``bench.workers``)."""
        self.spec = spec
        self.conn, child = _SPAWN.Pipe()
        self.proc: BaseProcess = _SPAWN.Process(target=run_worker, args=(child, spec), daemon=True)
        self.proc.start()
        child.close()

    @property
    def pid(self) -> int:
        """The worker's process id."""
        assert self.proc.pid is not None
        return self.proc.pid

    def send(self, command: dict[str, Any]) -> None:
        """Send a command."""
        self.conn.send(command)

    def receive(self, timeout: float) -> dict[str, Any]:
        """The worker's next report.

        Raises:
            WorkerError: the worker reported an error, exited, or did not answer in time.
        """
        try:
            if not self.conn.poll(timeout):
                raise WorkerError(f"{self.spec['role']} worker did not answer in {timeout:.0f} s")
            message: dict[str, Any] = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise WorkerError(f"{self.spec['role']} worker exited: {exc}") from None
        if "error" in message:
            raise WorkerError(f"{self.spec['role']} worker failed:\n{message['error']}")
        return message

    def close(self) -> None:
        """Ask the worker to close its connections and exit; kill it if it does not."""
        with contextlib.suppress(OSError, ValueError):
            self.conn.send({"op": "close"})
        self.proc.join(CLOSE_TIMEOUT)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(CLOSE_TIMEOUT)
        self.conn.close()


def receive_all(workers: list[Worker], timeout: float) -> list[dict[str, Any]]:
    """One report from each worker, all within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    return [worker.receive(max(0.0, deadline - time.monotonic())) for worker in workers]


def split(total: int, parts: int) -> list[int]:
    """``total`` divided into ``parts`` near-equal whole counts."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@dataclass
class Group:
    """What one group of browsers (same node, same keys) received, over all workers."""

    browsers: int = 0
    received: int = 0
    lost: int = 0
    duplicated: int = 0
    malformed: int = 0
    closed: int = 0
    #: Messages that arrived after their poster's next one.
    disordered: int = 0
    last: float = 0.0
    latency_parts: list[np.ndarray] = field(default_factory=list)
    arrival_parts: list[np.ndarray] = field(default_factory=list)
    exact_arrival_parts: list[np.ndarray] = field(default_factory=list)
    #: When each delivery was posted (monotonic ns), where the browsers kept it.
    sent_parts: list[np.ndarray] = field(default_factory=list)

    def add(self, report: dict[str, Any]) -> None:
        """Add one worker's report for this group."""
        self.browsers += report["browsers"]
        self.received += report["received"]
        self.lost += report["lost"]
        self.duplicated += report["duplicated"]
        self.malformed += report["malformed"]
        self.closed += report["closed"]
        self.disordered += report.get("disordered", 0)
        self.last = max(self.last, report["last"])
        self.latency_parts.append(np.frombuffer(report["latencies_ns"], dtype=np.int64) / 1e6)
        self.arrival_parts.append(np.frombuffer(report["arrivals_ns"], dtype=np.int64) / 1e6)
        exact = report.get("exact_arrivals_ns", b"")
        self.exact_arrival_parts.append(np.frombuffer(exact, dtype=np.int64) / 1e6)
        self.sent_parts.append(np.frombuffer(report.get("sent_ns", b""), dtype=np.int64))

    @property
    def latencies(self) -> np.ndarray:
        """Every delivery's latency in milliseconds."""
        return _joined(self.latency_parts)

    @property
    def arrivals(self) -> np.ndarray:
        """Post to the kernel's receive stamp, in ms (browsers with kernel stamps only)."""
        return _joined(self.arrival_parts)

    @property
    def exact_arrivals(self) -> np.ndarray:
        """The arrivals whose stamp is exact (``bench.wsclient.Tally.arrivals_ns``), in ms."""
        return _joined(self.exact_arrival_parts)

    @property
    def sent_ns(self) -> np.ndarray:
        """When each delivery of ``latencies`` was posted (empty unless the browsers kept it)."""
        return _joined(self.sent_parts, np.int64)


def _joined(parts: list[np.ndarray], dtype: type = np.float64) -> np.ndarray:
    """The workers' parts of one series as one array (empty, of ``dtype``, when none came)."""
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)


def percentiles(latencies: np.ndarray) -> dict[str, float | None]:
    """p50, p90, p99, max and mean of latencies in milliseconds (None when there are none)."""
    if latencies.size == 0:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    return {
        "p50": round(float(p50), 3),
        "p90": round(float(p90), 3),
        "p99": round(float(p99), 3),
        "max": round(float(latencies.max()), 3),
        "mean": round(float(latencies.mean()), 3),
    }


@dataclass
class Measurement:
    """What one driven window produced."""

    groups: dict[str, Group]
    posts: list[dict[str, Any]]
    node_cpu: dict[str, float]
    loadgen_cpu: float
    machine_busy: float
    #: CPU seconds used during the window by processes outside the benchmark, and
    #: by softirq work not done in the benchmark's processes (an upper bound).
    other_cpu: float
    #: CPU seconds spent in interrupt context (softirq: loopback TCP); part of it is
    #: also in the processes' CPU seconds (``bench.procfs.machine_cpu``).
    interrupt_cpu: float
    #: CPU seconds the hypervisor gave to other guests.
    steal_cpu: float
    window: float

    @property
    def deliveries(self) -> int:
        """Messages received once, over all groups."""
        return sum(group.received for group in self.groups.values())

    @property
    def posts_ok(self) -> int:
        """POSTs answered 200."""
        return sum(post["ok"] for post in self.posts)

    @property
    def posts_failed(self) -> int:
        """POSTs not answered 200."""
        return sum(post["issued"] - post["ok"] for post in self.posts)

    @property
    def posting_seconds(self) -> float:
        """From the first POST sent to the last answer received."""
        return float(max(p["ended"] for p in self.posts) - min(p["started"] for p in self.posts))

    @property
    def delivery_seconds(self) -> float:
        """From the first POST sent to the last message received."""
        last = max(group.last for group in self.groups.values())
        return max(last - float(min(p["started"] for p in self.posts)), 1e-9)


class Bench:
    """One scenario's nodes and workers, all stopped on exit."""

    def __init__(self, tag: str, profile_dir: Path | None = None, scenario: str = "") -> None:
        """Run messages tagged ``tag`` (the first 8 characters of their uniqueIDs).

        With ``profile_dir``, nodes run under cProfile and leave their stats there.
        """
        self.tag = tag
        self.profile_dir = profile_dir
        self.scenario = scenario
        self.fd_limit = procfs.raise_fd_limit()
        self.nodes: list[RelayNode] = []
        self.redis_servers: list[RedisProcess] = []
        self.workers: list[Worker] = []
        #: How long the last ``browsers`` call took to connect and subscribe everyone.
        self.connect_seconds = 0.0

    def __enter__(self) -> Bench:
        """Nothing to start: nodes and workers start as the scenario asks for them."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop every worker, then every node, whatever happened."""
        # Browsers first, with a reset each, so the nodes stop without 20,000 closing handshakes.
        began = time.monotonic()
        for worker in self.workers:
            worker.close()
        for node in self.nodes:
            node.stop()
        for redis in self.redis_servers:
            redis.stop()
        _progress(f"stopped {len(self.nodes)} nodes, {len(self.workers)} workers", began)

    def node(
        self,
        config: dict[str, Any],
        name: str = "relay",
        workers: int = 1,
        relay_src: Path | None = None,
    ) -> RelayNode:
        """Start a relay node (of ``workers`` processes), of the checkout ``relay_src`` if given."""
        profile = None
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            index = len(self.nodes)
            profile = self.profile_dir / f"{self.scenario}-{index}-{name}.pstats"
        node = RelayNode(config, name, profile, workers, relay_src)
        self.nodes.append(node)
        return node.start()

    def redis(self) -> RedisProcess:
        """Start a redis-server for broker-mode nodes; it is stopped after them."""
        server = RedisProcess()
        self.redis_servers.append(server)
        return server.start()

    def aphlict_node(
        self, directory: Path, client_port: int, admin_port: int, peers: list[int], name: str
    ) -> RelayNode:
        """Start an Aphlict node from the extraction in ``directory``."""
        config = aphlict_config(client_port, admin_port, peers)
        node = AphlictNode(directory, config, name, client_port, admin_port)
        self.nodes.append(node)
        return node.start()

    def browser_capacity(self, node: RelayNode) -> int:
        """How many browsers ``node`` can hold under the open-files limit."""
        return self.fd_limit - node.open_fds() - FD_MARGIN

    def browsers(
        self,
        groups: list[dict[str, Any]],
        *,
        workers: int,
        seen_size: int,
        kernel_stamps: bool = False,
        yield_cpu: int = 0,
    ) -> list[Worker]:
        """Start ``workers`` browser processes sharing ``groups``; wait until all are subscribed.

        Each group is ``{"name", "port", "count", "keys"}``; ``{index}`` in a key is
        replaced by the browser's number within its group. ``kernel_stamps`` adds
        each delivery's kernel receive time (``Group.arrivals``); each browser then
        holds a second descriptor. ``yield_cpu`` runs the browser processes that
        many niceness steps below the rest (what they read late still counts).
        """
        shares: list[list[dict[str, Any]]] = [[] for _ in range(workers)]
        for group in groups:
            first = 0
            for share, count in zip(shares, split(group["count"], workers), strict=True):
                if count:
                    share.append({**group, "count": count, "first_index": first})
                first += count
        started = [
            Worker(
                {
                    "role": "browsers",
                    "groups": share,
                    "tag": self.tag,
                    "seen_size": seen_size,
                    "kernel_stamps": kernel_stamps,
                    "yield_cpu": yield_cpu,
                }
            )
            for share in shares
            if share
        ]
        self.workers.extend(started)
        began = time.monotonic()
        receive_all(started, READY_TIMEOUT)
        self.connect_seconds = time.monotonic() - began
        _progress(f"{sum(g['count'] for g in groups)} browsers connected", began)
        return started

    def poster(self, **spec: Any) -> Worker:
        """Start a poster process (see ``PosterAgent``) and wait until it is connected."""
        worker = Worker({"role": "poster", "tag": self.tag, "body_bytes": 200, **spec})
        self.workers.append(worker)
        worker.receive(READY_TIMEOUT)
        return worker

    def drive(
        self,
        browsers: list[Worker],
        posters: list[Worker],
        *,
        barrier: bool,
        settle: float = 15.0,
        owner: dict[str, Any] | None = None,
    ) -> Measurement:
        """Post, wait for the deliveries (bounded by ``settle`` seconds), and measure.

        ``barrier`` (single node only) ends the wait with a ping on every browser;
        otherwise the wait ends when every expected message has arrived. With
        ``owner`` (posts to own keys, see ``bench.sources.owner_of``) each post
        is expected by one browser only.
        """
        cpu_before = {node.name: node.cpu_seconds() for node in self.nodes}
        loadgen_before = sum(procfs.cpu_seconds(w.pid) for w in self.workers)
        machine_before = procfs.machine_cpu()
        own_before = procfs.cpu_seconds(os.getpid())
        started = time.monotonic()
        for poster in posters:
            poster.send({"op": "go"})
        posts = receive_all(posters, max(p.spec["duration"] for p in posters) + READY_TIMEOUT)
        expected = [[p["seq_base"], p["seq_base"] + p["issued"]] for p in posts]
        excluded = [seq for p in posts for seq in p["failed"]]
        for worker in browsers:
            worker.send(
                {
                    "op": "finish",
                    "expected": expected,
                    "excluded": excluded,
                    "barrier": barrier,
                    "timeout": settle,
                    "owner": owner,
                }
            )
        reports = receive_all(browsers, settle + READY_TIMEOUT)
        window = time.monotonic() - started
        _progress("posted and received", started)
        node_cpu = {node.name: node.cpu_seconds() - cpu_before[node.name] for node in self.nodes}
        loadgen_cpu = sum(procfs.cpu_seconds(w.pid) for w in self.workers) - loadgen_before
        machine = {k: v - machine_before[k] for k, v in procfs.machine_cpu().items()}
        own = procfs.cpu_seconds(os.getpid()) - own_before
        # The processes' CPU includes the softirq ticks that interrupted them, which
        # /proc/stat counts apart from its tasks' time: compare with both together.
        busy = machine["tasks"] + machine["interrupts"]
        other = busy - sum(node_cpu.values()) - loadgen_cpu - own
        groups: dict[str, Group] = {}
        for report in reports:
            for name, group_report in report["groups"].items():
                groups.setdefault(name, Group()).add(group_report)
        return Measurement(
            groups=groups,
            posts=posts,
            node_cpu=node_cpu,
            loadgen_cpu=loadgen_cpu,
            machine_busy=1 - machine["idle"] / max(machine["total"], 1e-9),
            other_cpu=max(0.0, other),
            interrupt_cpu=machine["interrupts"],
            steal_cpu=machine["steal"],
            window=window,
        )
