"""The benchmark's scenarios, each a function from a ``Bench`` to a result dictionary.

Every scenario has full-size parameters (what the issue's targets are about)
and ``--quick`` ones for a smoke run. Every loop is bounded by a post count
and a duration; every wait by a timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import Bench, Group, Measurement, Worker, percentiles
from bench.server import RelayNode, free_port, node_config

#: The key every benchmark browser listens to and every post is sent to.
SHARED_KEY = "PHID-BENCH-ALL"
#: Each browser also listens to a key of its own, as a Phorge user's tab does.
OWN_KEY = "PHID-USER-{index:08d}"
BROWSER_KEYS = [SHARED_KEY, OWN_KEY]

#: Browsers per load-generator process, at most.
BROWSERS_PER_WORKER = 5000


@dataclass
class Outcome:
    """A scenario's result for the JSON and table, and its raw latencies for the plot."""

    result: dict[str, Any]
    latencies: dict[str, np.ndarray]
    sweep: list[dict[str, Any]] | None = None
    #: Series sampled over the scenario (``t`` in seconds, then each quantity), for the plot.
    timeline: dict[str, list[float]] | None = None


def _workers_for(browsers: int, minimum: int = 1) -> int:
    return max(minimum, -(-browsers // BROWSERS_PER_WORKER))


def delivery_figures(m: Measurement, cpu_node: str = "relay") -> dict[str, Any]:
    """The delivery figures common to every scenario that posts."""
    everything = Group()
    for group in m.groups.values():
        everything.browsers += group.browsers
        everything.lost += group.lost
        everything.duplicated += group.duplicated
        everything.malformed += group.malformed
        everything.closed += group.closed
    latencies = np.concatenate([g.latencies for g in m.groups.values()])
    arrivals = np.concatenate([g.arrivals for g in m.groups.values()])
    exact = np.concatenate([g.exact_arrivals for g in m.groups.values()])
    deliveries = m.deliveries
    cpu = m.node_cpu[cpu_node]
    # With kernel stamps, the figure beside the read time: when the bytes reached the
    # browser. A browser that reads late takes several writes in one read, stamped with
    # the newest: every message's figure is then an upper bound, and the exact ones
    # (each read's last message) are given apart, with their share.
    arrival = (
        {
            "arrival_latency_ms": percentiles(arrivals),
            "arrival_exact_ms": percentiles(exact),
            "arrival_exact_share": round(exact.size / arrivals.size, 3),
        }
        if arrivals.size
        else {}
    )
    return {
        "browsers": everything.browsers,
        "posts": m.posts_ok,
        "posts_failed": m.posts_failed,
        "posts_per_s": round(m.posts_ok / max(m.posting_seconds, 1e-9), 1),
        "deliveries": deliveries,
        "deliveries_per_s": round(deliveries / m.delivery_seconds, 1),
        "server_cpu_s": round(cpu, 3),
        "server_cpu_us_per_delivery": round(cpu / deliveries * 1e6, 3) if deliveries else None,
        "server_cpu_us_per_post": round(cpu / m.posts_ok * 1e6, 1) if m.posts_ok else None,
        "latency_ms": percentiles(latencies),
        **arrival,
        "lost": everything.lost,
        "duplicated": everything.duplicated,
        "malformed": everything.malformed,
        "browsers_closed": everything.closed,
        "loadgen_cpu_s": round(m.loadgen_cpu, 3),
        "machine_busy": round(m.machine_busy, 3),
        "other_cpu_s": round(m.other_cpu, 3),
        "interrupt_cpu_s": round(m.interrupt_cpu, 3),
        "steal_cpu_s": round(m.steal_cpu, 3),
        "window_s": round(m.window, 3),
    }


def fanout(
    bench: Bench,
    *,
    name: str,
    browsers: int,
    rate: float,
    duration: float,
    workers: int = 2,
    idle_name: str | None = None,
    broker: bool = False,
    aphlict: Path | None = None,
    kernel_stamps: bool = False,
) -> list[Outcome]:
    """``browsers`` browsers on one node, all subscribed to the key posted ``rate`` times/s.

    With ``idle_name``, the node's memory is also measured once the browsers are
    connected and before anything is posted, as that idle scenario: connecting
    20,000 browsers is the slowest step of the benchmark, so it is done once.
    With ``broker``, the node runs in broker mode on a Redis of its own: what
    the cluster-wide order costs a node's own browsers. With ``aphlict`` (an
    extraction of its server), the node is one Aphlict process instead, under
    the same browsers and posts, for figures beside relay's. ``kernel_stamps``
    adds each delivery's kernel arrival (``bench.kstamp``) beside its read
    time: what the server wrote when, apart from the load generators' lag.
    """
    if aphlict is not None:
        node = bench.aphlict_node(aphlict, free_port(), free_port(), [], name="aphlict")
    else:
        node = bench.node(node_config(broker=bench.redis().url if broker else None))
    posts = round(rate * duration)
    outcomes = []
    browser_workers, idle_outcome = _connect(
        bench,
        node,
        idle_name or "",
        browsers,
        max(workers, _workers_for(browsers)),
        posts,
        kernel_stamps=kernel_stamps,
    )
    if idle_name:
        outcomes.append(idle_outcome)
    connected = idle_outcome.result["parameters"]["browsers"]
    poster = bench.poster(
        port=node.admin_port,
        key=SHARED_KEY,
        seq_base=0,
        max_posts=posts,
        duration=duration,
        rate=rate,
        connections=8,
    )
    m = bench.drive(browser_workers, [poster], barrier=True)
    outcomes.append(
        Outcome(
            result={
                "scenario": name,
                "description": (
                    f"{connected} browsers, {rate:g} posts/s of 200 bytes for {duration:g} s"
                    + (" (broker mode)" if broker else "")
                    + (" on one Aphlict process" if aphlict is not None else "")
                ),
                "parameters": {**idle_outcome.result["parameters"], "rate": rate},
                "figures": delivery_figures(m, cpu_node=node.name),
                "notes": idle_outcome.result["notes"],
            },
            latencies=latency_series(name, m, kernel_stamps),
        )
    )
    return outcomes


def latency_series(
    name: str, m: Measurement, kernel_stamps: bool, *, exact: bool = False
) -> dict[str, np.ndarray]:
    """The read times of a run under ``name``, and (stamped) its arrivals beside them.

    With ``exact``, the exactly stamped arrivals too, where some are not (a
    browser read late): the other arrivals are then upper bounds.
    """
    read = np.concatenate([g.latencies for g in m.groups.values()])
    if not kernel_stamps:
        return {name: read}
    arrival = np.concatenate([g.arrivals for g in m.groups.values()])
    if exact:
        exactly = np.concatenate([g.exact_arrivals for g in m.groups.values()])
        if exactly.size < arrival.size:
            return {
                f"{name} read": read,
                f"{name} arrival, upper bound": arrival,
                f"{name} arrival, exact": exactly,
            }
    return {f"{name} read": read, f"{name} arrival": arrival}


def idle(bench: Bench, *, name: str, browsers: int) -> list[Outcome]:
    """Connect ``browsers`` idle browsers; RSS growth of the node divided by the browsers."""
    node = bench.node(node_config())
    _workers, outcome = _connect(bench, node, name, browsers, _workers_for(browsers, 2), 1)
    return [outcome]


def _connect(
    bench: Bench,
    node: RelayNode,
    name: str,
    browsers: int,
    workers: int,
    seen_size: int,
    *,
    kernel_stamps: bool = False,
) -> tuple[list[Worker], Outcome]:
    """Connect browsers (as many as the node's open-files limit allows) and measure its memory."""
    wanted = browsers
    browsers = min(browsers, bench.browser_capacity(node))
    rss_before = node.rss_bytes()
    cpu_before = node.cpu_seconds()
    browser_workers = bench.browsers(
        [{"name": "browsers", "port": node.client_port, "count": browsers, "keys": BROWSER_KEYS}],
        workers=workers,
        seen_size=seen_size,
        kernel_stamps=kernel_stamps,
    )
    rss_after = node.rss_bytes()
    cpu = node.cpu_seconds() - cpu_before
    notes = []
    if browsers < wanted:
        notes.append(
            f"{wanted} browsers asked, {browsers} fit: the open-files hard limit is "
            f"{bench.fd_limit} and cannot be raised here"
        )
    outcome = Outcome(
        result={
            "scenario": name,
            "description": f"{browsers} idle browsers, each subscribed to 2 keys",
            "parameters": {"browsers": browsers, "browsers_requested": wanted},
            "figures": {
                "browsers": browsers,
                "rss_before_bytes": rss_before,
                "rss_after_bytes": rss_after,
                "rss_per_connection_bytes": round((rss_after - rss_before) / browsers),
                "rss_per_connection_kib": round((rss_after - rss_before) / browsers / 1024, 2),
                "server_cpu_us_per_connect": round(cpu / browsers * 1e6, 1),
                "connect_seconds": round(bench.connect_seconds, 2),
            },
            "notes": notes,
        },
        latencies={},
    )
    return browser_workers, outcome


def throughput(
    bench: Bench,
    *,
    name: str,
    browsers: int,
    duration: float,
    max_posts: int,
    peers: int = 0,
    posters: int = 1,
    connections: int = 16,
) -> Outcome:
    """Post as fast as possible to a node with ``browsers`` subscribers (and ``peers`` peers)."""
    peer_nodes = []
    if peers:
        peer_ports = [free_port() for _ in range(peers)]
        peer_nodes = [
            bench.node(node_config(admin_port=port), name=f"peer{i + 1}")
            for i, port in enumerate(peer_ports)
        ]
        node = bench.node(node_config(peers=peer_ports), name="relay")
    else:
        node = bench.node(node_config())
    groups = [
        {"name": "browsers", "port": node.client_port, "count": browsers, "keys": BROWSER_KEYS}
    ]
    for i, peer in enumerate(peer_nodes):
        groups.append(
            {"name": f"peer{i + 1}", "port": peer.client_port, "count": 1, "keys": BROWSER_KEYS}
        )
    per_poster = max_posts // posters
    browser_workers = bench.browsers(groups, workers=1, seen_size=per_poster * posters)
    poster_workers = [
        bench.poster(
            port=node.admin_port,
            key=SHARED_KEY,
            seq_base=i * per_poster,
            max_posts=per_poster,
            duration=duration,
            rate=None,
            connections=connections,
        )
        for i in range(posters)
    ]
    m = bench.drive(browser_workers, poster_workers, barrier=not peers, settle=30.0)
    figures = delivery_figures(m)
    notes: list[str] = []
    if peers:
        # The headline figures are the posted node's; its peers' are reported apart.
        local = m.groups["browsers"]
        peer_groups = {n: g for n, g in m.groups.items() if n != "browsers"}
        figures["latency_ms"] = percentiles(local.latencies)
        figures["lost"] = local.lost
        figures["duplicated"] = local.duplicated
        figures["peer_cpu_s"] = {n: round(c, 3) for n, c in m.node_cpu.items() if n != "relay"}
        figures["peer_deliveries"] = {n: g.received for n, g in peer_groups.items()}
        figures["peer_lost"] = {n: g.lost for n, g in peer_groups.items()}
        figures["peer_latency_ms"] = percentiles(
            np.concatenate([g.latencies for g in peer_groups.values()])
        )
        dropped = sum(g.lost for g in peer_groups.values())
        if dropped:
            notes.append(
                f"{dropped} of {m.posts_ok * peers} messages never reached a peer's browser: "
                "the node forwards slower than it is posted to, and its bounded peer queues "
                "drop the oldest messages rather than slow the node down"
            )
    return Outcome(
        result={
            "scenario": name,
            "description": (
                f"{browsers} browsers, posting as fast as possible over {connections * posters} "
                f"keep-alive connections for up to {duration:g} s"
                + (f"; the node relays every post to {peers} peers" if peers else "")
            ),
            "parameters": {
                "browsers": browsers,
                "peers": peers,
                "duration_s": duration,
                "max_posts": max_posts,
                "connections": connections * posters,
            },
            "figures": figures,
            "notes": notes,
        },
        latencies={name: m.groups["browsers"].latencies},
    )


def sweep(
    bench_factory: Callable[[], Bench],
    *,
    name: str,
    subscribers: list[int],
    deliveries: int,
    duration: float,
) -> Outcome:
    """Throughput against subscriber count: post as fast as possible to 1 .. N subscribers."""
    points = []
    for count in subscribers:
        max_posts = max(20, min(100_000, deliveries // count))
        with bench_factory() as bench:
            node = bench.node(node_config())
            browser_workers = bench.browsers(
                [
                    {
                        "name": "browsers",
                        "port": node.client_port,
                        "count": count,
                        "keys": [SHARED_KEY],
                    }
                ],
                workers=1 if count < 100 else 2,
                seen_size=max_posts,
            )
            poster = bench.poster(
                port=node.admin_port,
                key=SHARED_KEY,
                seq_base=0,
                max_posts=max_posts,
                duration=duration,
                rate=None,
                connections=16 if count < 100 else 4,
            )
            m = bench.drive(browser_workers, [poster], barrier=True, settle=30.0)
        figures = delivery_figures(m)
        points.append(
            {
                "subscribers": count,
                "posts_per_s": figures["posts_per_s"],
                "deliveries_per_s": figures["deliveries_per_s"],
                "server_cpu_us_per_delivery": figures["server_cpu_us_per_delivery"],
                "latency_p99_ms": figures["latency_ms"]["p99"],
                "lost": figures["lost"],
                "duplicated": figures["duplicated"],
                "machine_busy": figures["machine_busy"],
            }
        )
    return Outcome(
        result={
            "scenario": name,
            "description": "posting as fast as possible to 1 node, for several subscriber counts",
            "parameters": {
                "subscribers": subscribers,
                "deliveries_per_point": deliveries,
                "duration_s": duration,
            },
            "figures": {"points": points},
            "notes": [],
        },
        latencies={},
        sweep=points,
    )


#: An extraction of Aphlict's server (``--aphlict DIR``): the mesh and 20k scenarios run it too.
APHLICT_DIR: Path | None = None
