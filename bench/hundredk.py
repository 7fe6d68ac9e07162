"""The ``100k`` scenario: 100,000 browsers on one ``--workers 6`` node in broker mode.

The node runs on a Redis of its own. Browsers, each subscribed to a shared
key and a key of its own (as a Phorge tab is), are opened by several
load-generator processes, each from loopback source addresses of its own
(``bench.sources``). Each relay worker gets an equal hard CPU quota and the
generators one between them (``bench.cpuquota``), so that neither side can
take the other's CPU. Measured: the connect rate, the node's memory (every
process) and the kernel's TCP memory per browser, then 1 post/s to the
shared key (every browser gets each) and 10 posts/s to own keys (one browser
gets each).
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import footprint, procfs, sources
from bench.cpuquota import CpuQuotas
from bench.generators import CONNECT_TIMEOUT, start_generators
from bench.harness import Bench, Measurement, Worker, percentiles, receive_all
from bench.scale import browsers_per_worker
from bench.scenarios import (
    OWN_KEY,
    SHARED_KEY,
    Outcome,
    delivery_figures,
    latency_series,
)
from bench.server import RelayNode, node_config

#: Browsers of the full scenario (``--browsers N`` sets fewer, to try it out).
BROWSERS = 100_000
#: Set by ``--workers N``, ``--worker-cores C`` and ``--loadgen-cores C``: what one
#: more worker, or more of the machine for the workers, changes (a field not set: ``Setup``'s).
SHAPE: dict[str, Any] = {}

#: Consecutive own-key posts go to browsers this far apart (a prime: every browser once).
OWN_STRIDE = 7919
#: How often the timeline (connections, memory) is sampled.
SAMPLE_INTERVAL = 1.0


@dataclass(frozen=True)
class Setup:
    """The scenario's shape: counts, rates and CPU quotas."""

    browsers: int = 100_000
    #: A stamped browser holds two descriptors (``bench.wsclient``): 12 generators keep
    #: each under this machine's 20,000 (6 ran out of them at 60,046 browsers).
    generators: int = 12
    workers: int = 6
    shared_rate: float = 1.0
    shared_duration: float = 30.0
    own_rate: float = 10.0
    own_duration: float = 30.0
    #: Cores' worth of CPU each relay worker may use, and all generators together.
    worker_cores: float = 0.22
    loadgen_cores: float = 0.6
    #: Browsers (of the total) in a process of their own outside the quota, mostly idle:
    #: their latency is relay's, without the lag of a generator reading 16,000 sockets.
    probes: int = 100


#: Tally each delivery's kernel arrival beside its read, as the generators' own
#: backlog is not relay's. A generator seconds behind reads two posts' messages at
#: once, stamped with the newer one's arrival, so relay's figure is the exact part
#: (``arrival_exact_ms``: each read's last message), beside the probes, which read
#: at once; ``arrival_latency_ms`` is an upper bound. A stamped read costs a
#: generator ~1.8 us more.
KERNEL_STAMPS = True

#: A smoke run's shape (``--quick``).
QUICK = Setup(
    browsers=2000, generators=2, workers=2, shared_duration=3.0, own_duration=3.0, probes=20
)


class Timeline:
    """Samples, once a second in a thread, TCP sockets in use and the node's total RSS.

    Time 0 is when the browsers begin to connect; ``mark`` notes when each
    posting phase begins.
    """

    def __init__(self, node: RelayNode) -> None:
        """Sample ``node``; nothing runs until ``start``."""
        self.node = node
        self.began = time.monotonic()
        self.series: dict[str, list[float]] = {
            "t": [],
            "tcp_inuse": [],
            "tcp_mem_mib": [],
            "rss_mib": [],
        }
        #: When each phase began (seconds), in the order of ``PHASES``.
        self.series["phases"] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)

    def start(self) -> Timeline:
        """Start sampling."""
        self._thread.start()
        return self

    def stop(self) -> dict[str, list[float]]:
        """Stop sampling; returns the series."""
        self._stop.set()
        self._thread.join(5.0)
        return self.series

    def mark(self) -> None:
        """The next phase begins now."""
        self.series["phases"].append(round(time.monotonic() - self.began, 1))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            try:
                rss = sum(_rss(self.node))
                tcp = procfs.sockstat()
            except (OSError, ValueError):
                continue  # a worker being restarted: skip this sample
            self.series["t"].append(round(time.monotonic() - self.began, 1))
            self.series["tcp_inuse"].append(tcp["inuse"])
            self.series["tcp_mem_mib"].append(round(tcp["mem_bytes"] / 1024 / 1024, 1))
            self.series["rss_mib"].append(round(rss / 1024 / 1024, 1))


def _rss(node: RelayNode) -> list[int]:
    return [procfs.rss_bytes(pid) for pid in node.pids()]


def _memory(node: RelayNode) -> dict[str, list[int]]:
    """The node's processes' PSS and anonymous memory (``procfs.memory``), by kind."""
    found = [procfs.memory(pid) for pid in node.pids()]
    return {kind: [m[kind] for m in found] for kind in ("pss", "anon")}


def run(factory: Callable[[], Bench], *, name: str, setup: Setup) -> list[Outcome]:
    """Connect, measure memory, broadcast, post to own keys; three outcomes and a timeline."""
    quotas = CpuQuotas(f"relay-bench-{os.getpid()}")
    with quotas, factory() as bench:
        redis = bench.redis()
        node = bench.node(node_config(broker=redis.url), workers=setup.workers)
        worker_pids = node.worker_pids()
        quotas.group("loadgen", setup.loadgen_cores)
        for i, pid in enumerate(worker_pids):
            quotas.group(f"worker{i + 1}", setup.worker_cores)
            quotas.add(f"worker{i + 1}", pid)
        timeline = Timeline(node).start()
        try:
            connect = _connect(bench, quotas, node, setup, name)
            shared_posts = round(setup.shared_rate * setup.shared_duration)
            timeline.mark()
            shared = _phase(
                bench, quotas, node, connect.workers, f"{name}-shared", setup, seq_base=0, own=False
            )
            timeline.mark()
            own = _phase(
                bench, quotas, node, connect.workers, f"{name}-own", setup, shared_posts, own=True
            )
        finally:
            series = timeline.stop()
        redis_rss = procfs.rss_bytes(redis.proc.pid) if redis.proc else 0
    connect.outcome.result["figures"]["redis_rss_mib"] = round(redis_rss / 1024 / 1024, 1)
    quota_note = (
        f"CPU quotas ({quotas.describe()}): {setup.worker_cores:g} core per relay worker, "
        f"{setup.loadgen_cores:g} core for the {setup.generators} load generators together"
        if quotas.available
        else f"no CPU quotas: {quotas.describe()}"
    )
    for outcome in (connect.outcome, shared, own):
        outcome.result["notes"].insert(0, quota_note)
    connect.outcome.timeline = series
    connect.outcome.result["timeline"] = series  # the plot's data, kept in results.json
    # Buffers fill while a broadcast is on its way: the kernel's TCP memory at its peak.
    for outcome, (start, end) in zip((shared, own), _phase_spans(series), strict=True):
        during = [
            mib
            for t, mib in zip(series["t"], series["tcp_mem_mib"], strict=True)
            if start <= t < end
        ]
        outcome.result["figures"]["kernel_tcp_mem_peak_mib"] = max(during, default=None)
    # What the node warned about (closing browsers, slow loops...) explains odd figures.
    problems = [line.strip() for line in node.log if " WARNING " in line or " ERROR " in line]
    connect.outcome.result["figures"]["node_log_problems"] = len(problems)
    connect.outcome.result["node_log_problems"] = problems[:20]
    return [connect.outcome, shared, own]


@dataclass
class _Connected:
    workers: list[Worker]
    outcome: Outcome


def _connect(
    bench: Bench, quotas: CpuQuotas, node: RelayNode, setup: Setup, name: str
) -> _Connected:
    """Open every browser from the generators, each in the loadgen quota; memory around it."""
    shares = sources.plan(setup.browsers - setup.probes, setup.generators)
    rss_before, tcp_before, slab_before = _rss(node), procfs.sockstat(), procfs.meminfo()["Slab"]
    memory_before = _memory(node)
    resident_before = procfs.resident_set_bytes(node.pids())
    cpu_before = node.cpu_seconds()
    began = time.monotonic()
    seen_size = round(
        setup.shared_rate * setup.shared_duration + setup.own_rate * setup.own_duration
    )
    started = start_generators(bench, quotas, node, setup, seen_size, kernel_stamps=KERNEL_STAMPS)
    reports = receive_all(started, CONNECT_TIMEOUT + 30.0)
    seconds = time.monotonic() - began
    cpu = node.cpu_seconds() - cpu_before
    rss_after, tcp_after, memory = _rss(node), procfs.sockstat(), procfs.meminfo()
    memory_after = _memory(node)
    resident_after = procfs.resident_set_bytes(node.pids())
    try:
        spread = browsers_per_worker(node.admin_port)
    except OSError:
        spread = []  # the status page too slow under this load: leave it out, keep the run
    figures = footprint.connect_figures(reports, seconds)
    figures["node_rejected"] = _rejected(node.admin_port)
    connected = figures["connected"]
    figures.update(
        {
            "browsers": setup.browsers,
            "server_cpu_us_per_connect": round(cpu / max(connected, 1) * 1e6, 1),
            "browsers_per_worker": spread,
            **footprint.memory_figures(
                rss_before,
                rss_after,
                tcp_before,
                tcp_after,
                connected,
                pss_before=memory_before["pss"],
                pss_after=memory_after["pss"],
                anon_before=memory_before["anon"],
                anon_after=memory_after["anon"],
                resident_before=resident_before,
                resident_after=resident_after,
            ),
            # The sockets' own kernel objects (not their buffers), for both ends of each.
            "kernel_slab_growth_mib": round((memory["Slab"] - slab_before) / 1024 / 1024, 1),
            "kernel_slab_kib_per_browser_both_ends": round(
                (memory["Slab"] - slab_before) / max(connected, 1) / 1024, 2
            ),
        }
    )
    low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    figures["limits"] = footprint.limits(
        connections_per_worker=spread,
        fd_limit=bench.fd_limit,
        per_address=max(-(-s.count // len(s.sources)) for s in shares),
        port_range=(low, high),
        memory_used_bytes=memory["MemTotal"] - memory["MemAvailable"],
        memory_total_bytes=memory["MemTotal"],
    )
    description = (
        f"{setup.browsers} browsers, each subscribed to a shared key and its own, opened by "
        f"{setup.generators} generators from {sum(len(s.sources) for s in shares)} loopback "
        f"addresses, on one --workers {setup.workers} node in broker mode; {setup.probes} of "
        "them (probes) in a process of their own outside the generators' quota"
    )
    result = {
        "scenario": f"{name}-connect",
        "description": description,
        "parameters": {**setup.__dict__, "sources": [list(s.sources) for s in shares]},
        "figures": figures,
        "notes": [],
    }
    return _Connected(started, Outcome(result=result, latencies={}))


def _rejected(admin_port: int) -> dict[str, float] | str:
    """Browser connections the node refused or dropped, by reason, from its /metrics."""
    prefix = 'relay_browser_connections_rejected_total{reason="'
    try:
        url = f"http://127.0.0.1:{admin_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
    except OSError as exc:
        return f"unread: {exc}"
    found = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            reason, _, value = line[len(prefix) :].partition('"} ')
            found[reason] = float(value)
    return found or "none"


#: Longest the browsers wait, after the last post, for what is still on its way.
SETTLE = 60.0


def _phase(
    bench: Bench,
    quotas: CpuQuotas,
    node: RelayNode,
    browsers: list[Worker],
    name: str,
    setup: Setup,
    seq_base: int,
    *,
    own: bool,
) -> Outcome:
    """Post to the shared key (every browser gets each post) or to own keys (one browser each)."""
    rate = setup.own_rate if own else setup.shared_rate
    duration = setup.own_duration if own else setup.shared_duration
    posts = round(rate * duration)
    owner = None
    if own:
        owner = {"pattern": OWN_KEY, "stride": OWN_STRIDE, "browsers": setup.browsers}
        owner["base"] = seq_base
    poster = bench.poster(
        port=node.admin_port,
        key=SHARED_KEY,
        seq_base=seq_base,
        max_posts=posts,
        duration=duration,
        rate=rate,
        connections=4,
        owner=owner,
    )
    m, figures = _drive(bench, quotas, node, browsers, poster, owner)
    notes = [footprint.quota_use(figures, setup.worker_cores, setup.loadgen_cores)]
    what = (
        f"{rate:g} posts/s for {duration:g} s, each to one browser's own key"
        if own
        else f"{rate:g} post/s for {duration:g} s to the key every browser listens to"
    )
    return Outcome(
        result={
            "scenario": name,
            "description": (
                f"{figures['browsers']} browsers on one --workers {setup.workers} node: {what}"
            ),
            "parameters": {"rate": rate, "duration_s": duration, "posts": posts},
            "figures": figures,
            "notes": notes,
        },
        latencies={
            **latency_series(name, m, KERNEL_STAMPS, exact=True),
            **(
                {f"{name} probes": m.groups["probe"].latencies}
                if "probe_latency_ms" in figures
                else {}
            ),
        },
    )


def _drive(
    bench: Bench,
    quotas: CpuQuotas,
    node: RelayNode,
    browsers: list[Worker],
    poster: Worker,
    owner: dict[str, Any] | None,
) -> tuple[Measurement, dict[str, Any]]:
    """Post and wait for the deliveries; the figures, with each process's CPU and quota."""
    pids = node.pids()
    throttled_before = quotas.throttling()
    cpu_before = [procfs.cpu_seconds(pid) for pid in pids]
    m = bench.drive(browsers, [poster], barrier=False, settle=SETTLE, owner=owner)
    figures = delivery_figures(m)
    figures["node_cpu_s_per_process"] = [
        round(procfs.cpu_seconds(pid) - before, 2)
        for pid, before in zip(pids, cpu_before, strict=True)
    ]
    if "probe" in m.groups and m.groups["probe"].received:
        figures["probe_latency_ms"] = percentiles(m.groups["probe"].latencies)
    workers = set(node.worker_pids())
    figures["worker_cores_used"] = [
        round(cpu / m.window, 3)
        for pid, cpu in zip(pids, figures["node_cpu_s_per_process"], strict=True)
        if pid in workers
    ]
    figures["loadgen_cores_used"] = round(m.loadgen_cpu / m.window, 3)
    figures["cpu_throttled_share"] = footprint.throttled_share(
        throttled_before, quotas.throttling()
    )
    return m, figures


def _phase_spans(series: dict[str, list[float]]) -> list[tuple[float, float]]:
    """Each posting phase's (start, end) in the timeline's seconds."""
    marks = series["phases"]
    ends = [*marks[1:], float("inf")]
    return list(zip(marks, ends, strict=True))
