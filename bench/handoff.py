"""The ``handoff`` scenario: a node full of idle browsers hands them all to new code.

One single-process node (mesh mode, no broker) started with
``--handoff-socket`` holds as many idle browsers as one process can under the
open-files limit, each subscribed to a shared key and a key of its own, opened
by several load-generator processes from loopback addresses of their own
(``bench.sources``), with probes outside them as ``bench.hundredk`` has. Posts
go on at a steady rate to the shared key and to own keys; part-way through,
a second copy of relay's code (a version string of its own) starts with
``--take-over`` and the old process hands over and exits. New browsers keep
arriving throughout (``bench.joiner``). Each relay process and the generators
run under CPU quotas of their own (``bench.cpuquota``).
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import footprint, generators, handoff_nodes, procfs
from bench import handoff_figures as hf
from bench.cpuquota import CpuQuotas
from bench.generators import CONNECT_TIMEOUT
from bench.harness import READY_TIMEOUT, Bench, Group, Worker, receive_all
from bench.hundredk import OWN_STRIDE, SETTLE
from bench.scenarios import OWN_KEY, SHARED_KEY, Outcome
from bench.server import RelayNode, node_config

#: Browsers of the full scenario: what one process holds under a 20,000 open-files limit,
#: leaving room for the browsers that join during the run.
BROWSERS = 18_000


@dataclass(frozen=True)
class Setup:
    """The scenario's shape: counts, rates, phases and CPU quotas."""

    browsers: int = BROWSERS
    generators: int = 4
    shared_rate: float = 2.0
    own_rate: float = 10.0
    #: Seconds of posting before the successor starts, then room for the handoff, then after.
    before: float = 20.0
    budget: float = 60.0
    after: float = 20.0
    #: New browsers per second, throughout the posting.
    join_rate: float = 10.0
    #: Cores' worth of CPU each relay process may use, and the generators together.
    relay_cores: float = 0.7
    loadgen_cores: float = 0.6
    probes: int = 100


#: A smoke run's shape (``--quick``).
QUICK = Setup(browsers=2000, generators=2, before=4.0, budget=10.0, after=4.0, probes=20)


def run(factory: Callable[[], Bench], *, name: str, setup: Setup) -> list[Outcome]:
    """Connect, post throughout, hand over part-way; one outcome with a timeline."""
    quotas = CpuQuotas(f"relay-bench-{os.getpid()}")
    with (
        tempfile.TemporaryDirectory(prefix="relay-bench-handoff-") as scratch,
        quotas,
        factory() as bench,
    ):
        socket_path = str(Path(scratch) / "handoff.sock")
        src, version = handoff_nodes.successor_checkout(Path(scratch) / "successor")
        args = ("--handoff-socket", socket_path)
        old = RelayNode(node_config(), "relay-old", args=args)
        new = RelayNode(node_config(), "relay-new", relay_src=src, args=(*args, "--take-over"))
        bench.nodes.extend([old, new])  # both stopped at the end, whatever happens
        old.start()
        for group, cores in (("relay-old", setup.relay_cores), ("relay-new", setup.relay_cores)):
            quotas.group(group, cores)
        quotas.group("loadgen", setup.loadgen_cores)
        quotas.add("relay-old", old.pid)
        base_fds = old.open_fds()
        rss_idle = procfs.rss_bytes(old.pid)
        began = time.monotonic()
        browsers = generators.start_generators(
            bench, quotas, old, setup, _seqs(setup)[2], keep_sent=True
        )
        ready = receive_all(browsers, CONNECT_TIMEOUT + 30.0)
        connect_s = time.monotonic() - began
        figures, latencies = _run_posts(bench, quotas, old, new, setup, browsers, base_fds)
        figures["connect"] = {
            "connected": sum(r["ready"] for r in ready),
            "failed": sum(sum(r["failed"].values()) for r in ready),
            "seconds": round(connect_s, 1),
        }
        figures["rss_mib"]["old_idle_before_browsers"] = _mib(rss_idle)
        figures["successor_version"] = version
        logs = {"old": old.log, "new": new.log}
    outcome = _outcome(name, setup, figures, quotas, logs)
    outcome.latencies = latencies
    return [outcome]


def _seqs(setup: Setup) -> tuple[int, int, int]:
    """Shared posts' most, own posts' first seq, and the browsers' ``seen`` size.

    A gap of one between the two ranges: a browser's check that the next post
    has not overtaken this one never compares a shared post with an own one.
    """
    seconds = setup.before + setup.budget + setup.after
    shared = round(setup.shared_rate * seconds)
    own = round(setup.own_rate * seconds)
    return shared, shared + 1, shared + 1 + own + 1


def _start_posting(
    bench: Bench, old: RelayNode, setup: Setup, browsers: list[Worker]
) -> tuple[list[Worker], Worker]:
    """The shared-key and the own-key posters, and the joiner; each ready, none started."""
    shared_posts, own_base, _ = _seqs(setup)
    seconds = setup.before + setup.budget + setup.after
    owner = {"pattern": OWN_KEY, "stride": OWN_STRIDE, "browsers": setup.browsers, "base": own_base}
    common = {"port": old.admin_port, "duration": seconds, "connections": 4, "fresh": True}
    posters = [
        bench.poster(
            key=SHARED_KEY, seq_base=0, max_posts=shared_posts, rate=setup.shared_rate, **common
        ),
        bench.poster(
            key=SHARED_KEY,
            seq_base=own_base,
            max_posts=round(setup.own_rate * seconds),
            rate=setup.own_rate,
            owner=owner,
            **common,
        ),
    ]
    # From the address after the probes': the joiner's ports compete with no one's.
    probe_source = browsers[-1].spec["groups"][0]["sources"][-1]
    joiner = Worker(
        {
            "role": "joiner",
            "tag": bench.tag,
            "port": old.client_port,
            "rate": setup.join_rate,
            "duration": seconds,
            "source": str(ipaddress.IPv4Address(probe_source) + 1),
        }
    )
    bench.workers.append(joiner)
    joiner.receive(READY_TIMEOUT)
    return posters, joiner


def _run_posts(
    bench: Bench,
    quotas: CpuQuotas,
    old: RelayNode,
    new: RelayNode,
    setup: Setup,
    browsers: list[Worker],
    base_fds: int,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Post throughout, start the successor after ``before`` s; figures of the whole window."""
    seconds = setup.before + setup.budget + setup.after
    posters, joiner = _start_posting(bench, old, setup, browsers)
    loadgen = [w for w in browsers if w.spec["groups"][0]["name"] == "browsers"]
    outside = [w for w in bench.workers if w not in loadgen]
    throttled_before = quotas.throttling()
    machine_before = procfs.machine_cpu()
    cpu_before = {
        "loadgen": sum(procfs.cpu_seconds(w.pid) for w in loadgen),
        "outside": sum(procfs.cpu_seconds(w.pid) for w in outside)
        + procfs.cpu_seconds(os.getpid()),
        "old": procfs.cpu_seconds(old.pid),
    }
    went = time.monotonic()
    for worker in (*posters, joiner):
        worker.send({"op": "go"})
    time.sleep(max(0.0, went + setup.before - time.monotonic()))
    rss_before = procfs.rss_bytes(old.pid)
    old_cpu_at_start = procfs.cpu_seconds(old.pid)
    started, started_wall = time.monotonic(), time.time()
    new.launch()
    quotas.add("relay-new", new.pid)
    deadline = started + setup.budget + setup.after
    samples, old_exit, old_cpu_end = handoff_nodes.watch(old, new, deadline)
    new.wait_ready()
    new_cpu_at_exit, read_at_exit = procfs.cpu_seconds(new.pid), time.monotonic()
    rss_new_at_exit = procfs.rss_bytes(new.pid)
    shared, own = posts = receive_all(posters, seconds + READY_TIMEOUT)
    # Over the posting after the handoff only (the finish below posts nothing).
    new_per_s_after = (procfs.cpu_seconds(new.pid) - new_cpu_at_exit) / max(
        time.monotonic() - read_at_exit, 1e-9
    )
    attempts = joiner.receive(seconds + READY_TIMEOUT)["attempts"]
    groups = _finish(browsers, posts, setup)
    window = time.monotonic() - went
    new_cpu_end = procfs.cpu_seconds(new.pid)
    machine = {k: v - machine_before[k] for k, v in procfs.machine_cpu().items()}
    loadgen_cpu = sum(procfs.cpu_seconds(w.pid) for w in loadgen) - cpu_before["loadgen"]
    outside_cpu = (
        sum(procfs.cpu_seconds(w.pid) for w in outside)
        + procfs.cpu_seconds(os.getpid())
        - cpu_before["outside"]
    )
    relay_cpu = old_cpu_end - cpu_before["old"] + new_cpu_end
    held_at_start = hf.held(samples[0].old_fds if samples else None, base_fds)
    timing = hf.timing(
        samples, began=started, old_exit=old_exit, base_fds=base_fds, browsers=held_at_start
    )
    logged = hf.logged_seconds(old.log, started_wall)
    figures: dict[str, Any] = {
        "handoff_s": {
            "successor_said_hello": logged["handing over to relay"],
            **timing,
            "old_logged_done": logged["handoff done"],
        },
        "browsers_at_handoff": held_at_start,
        **handoff_nodes.moved(old.log, new.log),
        "status_after": handoff_nodes.status(new.admin_port),
        "posts": {
            "shared_issued": shared["issued"],
            "shared_ok": shared["ok"],
            "own_issued": own["issued"],
            "own_ok": own["ok"],
            "failed": shared["issued"] + own["issued"] - shared["ok"] - own["ok"],
        },
        "posts_failed_by_status": {
            str(k): v for p in posts for k, v in p["statuses"].items() if int(k) != 200
        }
        or "none",
    }
    deliveries, latencies = _deliveries(groups, started, old_exit)
    figures.update(deliveries)
    figures.update(hf.joins(attempts, started, old_exit))
    figures["rss_mib"] = {
        "old_before_handoff": _mib(rss_before),
        "new_at_old_exit": _mib(rss_new_at_exit),
        "new_at_end": _mib(procfs.rss_bytes(new.pid)),
    }
    figures["cpu_s"] = {
        "old_per_s_before": round((old_cpu_at_start - cpu_before["old"]) / setup.before, 3),
        "old_during_handoff": round(old_cpu_end - old_cpu_at_start, 2),
        "new_during_handoff": round(new_cpu_at_exit, 2),
        "new_per_s_after": round(new_per_s_after, 3),
        "generators": round(loadgen_cpu, 2),
        "bench_outside_quotas": round(outside_cpu, 2),
        "other_processes": round(
            max(0.0, machine["tasks"] - relay_cpu - loadgen_cpu - outside_cpu), 2
        ),
        "interrupts": round(machine["interrupts"], 2),
        "steal": round(machine["steal"], 2),
    }
    figures["cpu_throttled_share"] = footprint.throttled_share(
        throttled_before, quotas.throttling()
    )
    figures["machine_busy"] = round(1 - machine["idle"] / max(machine["total"], 1e-9), 3)
    figures["window_s"] = round(window, 1)
    figures["timeline"] = hf.timeline(samples, since=went, base_fds=base_fds) | {
        "phases": [round(started - went, 2), round(old_exit - went, 2)]
    }
    return figures, latencies


def _finish(browsers: list[Worker], posts: list[dict[str, Any]], setup: Setup) -> dict[str, Group]:
    """Have every browser wait for what was posted (ping barrier, bounded) and tally it."""
    shared, own = posts
    _, own_base, _ = _seqs(setup)
    owner = {"pattern": OWN_KEY, "stride": OWN_STRIDE, "browsers": setup.browsers, "base": own_base}
    for worker in browsers:
        worker.send(
            {
                "op": "finish",
                "expected": [[0, shared["issued"]]],
                "owner_ranges": [[own_base, own_base + own["issued"]]],
                "owner": owner,
                "excluded": [seq for p in posts for seq in p["failed"]],
                "barrier": True,
                "timeout": SETTLE,
            }
        )
    groups: dict[str, Group] = {}
    for report in receive_all(browsers, SETTLE + READY_TIMEOUT):
        for name, group_report in report["groups"].items():
            groups.setdefault(name, Group()).add(group_report)
    return groups


def _deliveries(
    groups: dict[str, Group], began: float, ended: float
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Lost, duplicated, out of order, closed; latency by phase, for all and for the probes.

    Also each phase's latencies, for the plot.
    """
    everything = Group()
    for group in groups.values():
        for part in ("browsers", "received", "lost", "duplicated", "malformed", "closed"):
            setattr(everything, part, getattr(everything, part) + getattr(group, part))
        everything.disordered += group.disordered
        everything.latency_parts.extend(group.latency_parts)
        everything.sent_parts.extend(group.sent_parts)
    figures: dict[str, Any] = {
        "browsers": everything.browsers,
        "browsers_closed": everything.closed,
        "deliveries": everything.received,
        "lost": everything.lost,
        "duplicated": everything.duplicated,
        "out_of_order": everything.disordered,
        "malformed": everything.malformed,
    }
    window = (round(began * 1e9), round(ended * 1e9))
    latencies = {}
    measured = [("latency_ms", "all", everything)]
    if "probe" in groups:
        measured.append(("probe_latency_ms", "probes", groups["probe"]))
    for label, who, group in measured:
        phases = hf.split_by_phase(group.sent_ns, group.latencies, *window)
        for phase, values in hf.phase_latencies(phases).items():
            figures[f"{label}_{phase}"] = values
        latencies.update({f"{who}, posted {p} the handoff": v for p, v in phases.items()})
    return figures, latencies


def _mib(value: int) -> float:
    return round(value / 1024 / 1024, 1)


def _outcome(
    name: str,
    setup: Setup,
    figures: dict[str, Any],
    quotas: CpuQuotas,
    logs: dict[str, list[str]],
) -> Outcome:
    """The result, with the quota note, the log problems and the plot's data."""
    timeline = figures.pop("timeline")
    quota_note = (
        f"CPU quotas ({quotas.describe()}): {setup.relay_cores:g} core for each relay "
        f"process (old and new, each its own group), {setup.loadgen_cores:g} core for the "
        f"{setup.generators} load generators together; posters, probes, the joiner and the "
        "coordinator outside them"
        if quotas.available
        else f"no CPU quotas: {quotas.describe()}"
    )
    # The bench runs as root (for the quotas): relay's warning about that is no problem.
    problems = {
        side: [
            line.strip()
            for line in lines
            if (" WARNING " in line or " ERROR " in line) and "running as root" not in line
        ]
        for side, lines in logs.items()
    }
    figures["node_log_problems"] = {side: len(found) for side, found in problems.items()}
    description = (
        f"{setup.browsers} idle browsers (a shared key and an own key each) on one "
        f"single-process node, {setup.shared_rate:g} posts/s to the shared key and "
        f"{setup.own_rate:g} posts/s to own keys, {setup.join_rate:g} new browsers/s; after "
        f"{setup.before:g} s a copy of the code with another version takes over"
    )
    result = {
        "scenario": name,
        "description": description,
        "parameters": asdict(setup),
        "figures": figures,
        "notes": [quota_note],
        "node_log_problems": {side: found[:10] for side, found in problems.items()},
        # What each process said about the handoff, with its times: where the time went.
        "handoff_log": {
            side: [
                line.strip()
                for line in lines
                if "relay.handoff" in line or "listener ready" in line
            ][:20]
            for side, lines in logs.items()
        },
        "timeline": timeline,
    }
    return Outcome(result=result, latencies={}, timeline=timeline)
