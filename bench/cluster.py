"""The benchmark's scenarios with several nodes: a mesh's hop, cluster rates, Aphlict's mesh beside.

Like ``bench.scenarios`` (whose keys, outcomes and delivery figures these
share), every loop is bounded by a post count and a duration, every wait by
a timeout.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import Bench, percentiles
from bench.scenarios import (
    BROWSER_KEYS,
    SHARED_KEY,
    Outcome,
    delivery_figures,
)
from bench.server import free_port, node_config


def cluster_hop(
    bench: Bench, *, name: str, browsers_per_node: int, rate: float, duration: float
) -> Outcome:
    """A 3-node mesh; posts go to node 1; compare its browsers' latency with nodes 2 and 3's."""
    ports = [free_port() for _ in range(3)]
    nodes = [
        bench.node(
            node_config(admin_port=port, peers=[p for p in ports if p != port]),
            name=f"node{i + 1}",
        )
        for i, port in enumerate(ports)
    ]
    groups = [
        {
            "name": "direct" if i == 0 else f"hop-node{i + 1}",
            "port": node.client_port,
            "count": browsers_per_node,
            "keys": BROWSER_KEYS,
        }
        for i, node in enumerate(nodes)
    ]
    posts = round(rate * duration)
    browser_workers = bench.browsers(groups, workers=2, seen_size=posts)
    poster = bench.poster(
        port=nodes[0].admin_port,
        key=SHARED_KEY,
        seq_base=0,
        max_posts=posts,
        duration=duration,
        rate=rate,
        connections=4,
    )
    m = bench.drive(browser_workers, [poster], barrier=False, settle=10.0)
    figures = delivery_figures(m, cpu_node="node1")
    direct = m.groups["direct"].latencies
    hop = np.concatenate([g.latencies for n, g in m.groups.items() if n != "direct"])
    direct_p, hop_p = percentiles(direct), percentiles(hop)
    figures["latency_direct_ms"] = direct_p
    figures["latency_one_hop_ms"] = hop_p
    added: dict[str, float | None] = {}
    for k in ("p50", "p90", "p99"):
        one_hop, local = hop_p[k], direct_p[k]
        added[k] = None if one_hop is None or local is None else round(one_hop - local, 3)
    figures["added_by_hop_ms"] = added
    figures["lost_by_group"] = {n: g.lost for n, g in m.groups.items()}
    figures["node_cpu_s"] = {n: round(c, 3) for n, c in m.node_cpu.items()}
    notes = []
    if hop.size == 0:
        notes.append("no message reached nodes 2 and 3: peering did not forward anything")
    return Outcome(
        result={
            "scenario": name,
            "description": (
                f"3-node mesh, {browsers_per_node} browsers per node, {rate:g} posts/s to node 1 "
                f"for {duration:g} s; the hop adds (node 2 and 3 latency) - (node 1 latency)"
            ),
            "parameters": {
                "browsers_per_node": browsers_per_node,
                "rate": rate,
                "duration_s": duration,
            },
            "figures": figures,
            "notes": notes,
        },
        latencies={f"{name} direct": direct, f"{name} one hop": hop},
    )


def cluster_rate(
    bench: Bench,
    *,
    name: str,
    mode: str,
    size: int,
    browsers_per_node: int,
    rate: float | None,
    duration: float,
    max_posts: int = 200_000,
) -> Outcome:
    """``size`` nodes, a full mesh or on one Redis; ``rate`` posts/s to node 1.

    With ``rate`` None, node 1 is posted to as fast as it answers (at most
    ``max_posts``): what one node can publish.

    Every node has ``browsers_per_node`` browsers on the posted key, so the
    figures say what crosses nodes at that rate: deliveries/s, what was lost
    on the way (the mesh's bounded peer queues, the broker's publish queue),
    and the cross-node latency (browsers of nodes 2.. against node 1's).
    """
    redis = bench.redis() if mode == "broker" else None
    ports = [free_port() for _ in range(size)]
    nodes = [
        bench.node(
            node_config(
                admin_port=port,
                peers=[p for p in ports if p != port] if mode == "mesh" else None,
                broker=redis.url if redis is not None else None,
            ),
            name=f"node{i + 1}",
        )
        for i, port in enumerate(ports)
    ]
    groups = [
        {
            "name": "direct" if i == 0 else f"cross-node{i + 1}",
            "port": node.client_port,
            "count": browsers_per_node,
            "keys": BROWSER_KEYS,
        }
        for i, node in enumerate(nodes)
    ]
    posts = max_posts if rate is None else round(rate * duration)
    browser_workers = bench.browsers(groups, workers=2, seen_size=posts)
    poster = bench.poster(
        port=nodes[0].admin_port,
        key=SHARED_KEY,
        seq_base=0,
        max_posts=posts,
        duration=duration,
        rate=rate,
        connections=16,
    )
    redis_cpu_before = redis.cpu_seconds() if redis is not None else 0.0
    m = bench.drive(browser_workers, [poster], barrier=False, settle=15.0)
    figures = delivery_figures(m, cpu_node="node1")
    direct = m.groups["direct"].latencies
    cross = np.concatenate([g.latencies for n, g in m.groups.items() if n != "direct"])
    figures["latency_direct_ms"] = percentiles(direct)
    figures["latency_cross_node_ms"] = percentiles(cross)
    figures["lost_by_group"] = {n: g.lost for n, g in m.groups.items()}
    cross_expected = m.posts_ok * (size - 1) * browsers_per_node
    cross_lost = sum(g.lost for n, g in m.groups.items() if n != "direct")
    figures["cross_node_loss_fraction"] = (
        round(cross_lost / cross_expected, 4) if cross_expected else None
    )
    figures["node_cpu_s"] = {n: round(c, 3) for n, c in m.node_cpu.items()}
    if redis is not None:
        redis_cpu = redis.cpu_seconds() - redis_cpu_before
        figures["redis_cpu_s"] = round(redis_cpu, 3)
        figures["redis_cpu_us_per_post"] = (
            round(redis_cpu / m.posts_ok * 1e6, 1) if m.posts_ok else None
        )
    notes = []
    if cross.size == 0:
        notes.append("no message crossed to another node")
    how = "nodes in a full mesh" if mode == "mesh" else "nodes on one Redis (broker mode)"
    return Outcome(
        result={
            "scenario": name,
            "description": (
                f"{size} {how}, {browsers_per_node} browsers per node, "
                + ("posting as fast as node 1 answers" if rate is None else f"{rate:g} posts/s")
                + f" to node 1 for {duration:g} s"
            ),
            "parameters": {
                "mode": mode,
                "nodes": size,
                "browsers_per_node": browsers_per_node,
                "rate": rate,
                "duration_s": duration,
            },
            "figures": figures,
            "notes": notes,
        },
        latencies={f"{name} cross-node": cross},
    )


def _warm_up_mesh(admin_ports: list[int], relay_peers: bool, timeout: float = 15.0) -> None:
    """Post once to each node, then wait until each has found itself and its peers are up.

    Before that, a node sends its first messages to every entry of its list
    (itself included) one at a time; the measured window should not include
    that discovery. A key no browser listens to keeps these posts out of the tallies.
    """
    for port in admin_ports:
        body = b'{"key":"PHID-WARM","type":"warm-up","subscribers":["PHID-WARM-UP"]}'
        request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
    if not relay_peers:
        return
    deadline = time.monotonic() + timeout
    while True:
        settled = True
        for port in admin_ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status/", timeout=5) as r:
                links = json.loads(r.read())["cluster"]
            others = [link for link in links if not link["self"]]
            if len(others) == len(links) or any(
                link["state"] != "up" or not link["batching"] for link in others
            ):
                settled = False
        if settled:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the mesh did not settle (every node up, batching) in time")
        time.sleep(0.05)


def mesh_rate(
    bench_factory: Callable[[], Bench],
    *,
    name: str,
    rates: list[int],
    browsers: int,
    duration: float,
    aphlict: Path | None = None,
) -> list[Outcome]:
    """A 3-node full mesh; ``browsers`` on node 2, posts to node 1 at each rate (fresh mesh each).

    What the poster's node accepts (200) must reach node 2's browsers once
    each; latency is cross-node (post sent to frame read on node 2). With
    ``aphlict``, the same runs on three Aphlict nodes from that extraction.
    """
    outcomes = []
    for rate in rates:
        with bench_factory() as bench:
            ports = [free_port() for _ in range(3)]
            if aphlict is None:
                nodes = [
                    bench.node(node_config(admin_port=port, peers=ports), name=f"node{i + 1}")
                    for i, port in enumerate(ports)
                ]
            else:
                nodes = [
                    bench.aphlict_node(aphlict, free_port(), port, ports, name=f"node{i + 1}")
                    for i, port in enumerate(ports)
                ]
            _warm_up_mesh(ports, relay_peers=aphlict is None)
            posts = round(rate * duration)
            groups = [
                {
                    "name": "node2",
                    "port": nodes[1].client_port,
                    "count": browsers,
                    "keys": BROWSER_KEYS,
                }
            ]
            # Over 2,000 posts/s, 50 browsers read 100,000 frames/s: two reader processes.
            workers = 2 if rate >= 2000 else 1
            browser_workers = bench.browsers(groups, workers=workers, seen_size=posts)
            poster = bench.poster(
                port=nodes[0].admin_port,
                key=SHARED_KEY,
                seq_base=0,
                max_posts=posts,
                duration=duration,
                rate=rate,
                connections=64,
            )
            m = bench.drive(browser_workers, [poster], barrier=False, settle=15.0)
            peers = _peer_totals(ports) if aphlict is None else {}
        figures = delivery_figures(m, cpu_node="node1")
        figures["asked_posts_per_s"] = rate
        figures["refused_503"] = sum(p["statuses"].get(503, 0) for p in m.posts)
        figures["node_cpu_s"] = {n: round(c, 3) for n, c in m.node_cpu.items()}
        figures.update(peers)
        notes = []
        if figures["posts_per_s"] < rate * 0.95:
            notes.append(
                f"node 1 accepted {figures['posts_per_s']:g} posts/s of the {rate} asked for"
            )
        outcomes.append(
            Outcome(
                result={
                    "scenario": f"{name}-{rate}",
                    "description": (
                        f"3-node {'relay' if aphlict is None else 'Aphlict'} mesh, "
                        f"{browsers} browsers on node 2, {rate} posts/s "
                        f"to node 1 for {duration:g} s; latency is cross-node"
                    ),
                    "parameters": {"rate": rate, "browsers": browsers, "duration_s": duration},
                    "figures": figures,
                    "notes": notes,
                },
                latencies={f"{name}-{rate}": m.groups["node2"].latencies},
            )
        )
    return outcomes


def _peer_totals(admin_ports: list[int]) -> dict[str, Any]:
    """Peer transfers, requests and drops over the whole mesh, read from every node's status."""
    sent = requests = dropped = refused = 0
    arrived = []
    for port in admin_ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status/", timeout=5) as response:
            status = json.loads(response.read())
        arrived.append(status["messages.in"])
        for link in status["cluster"]:
            sent += link["sent"]
            requests += link["requests"]
            dropped += link["dropped"]
        refused += status.get("overload", {}).get("refused", 0)
    return {
        # Messages each node took in (posts and peer transfers, warm-up included): in an
        # N-1 mesh node 2's figure is what node 1 accepted plus the warm-up posts.
        "node_messages_in": {f"node{i + 1}": n for i, n in enumerate(arrived)},
        "peer_transfers": sent,
        "peer_requests": requests,
        "peer_dropped": dropped,
        "overload_refused": refused,
    }
