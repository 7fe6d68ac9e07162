"""The ``100k-roll`` scenario: the ``100k`` node's workers replaced in turn (SIGUSR2) under load.

One ``--workers 6`` node in broker mode on a Redis of its own, as ``100k``
has it, runs a copy of relay's code (``bench.handoff_nodes``) and holds
100,000 browsers opened as the ``handoff`` scenario opens them (generators
from loopback addresses of their own, probes outside their quota). Posts go
on throughout, 1 post/s to the shared key and 10/s to own keys, and new
browsers keep arriving (``bench.joiner``). Part-way, the copy is upgraded in
place (another version string) and the supervisor gets SIGUSR2: each worker
hands its browsers to a successor running the new code, one after the other.
The handoff scenario's posting, tally and figures are reused as they are;
this module adds what a roll of several workers needs: a CPU quota for each
successor as the supervisor starts it, the roll's timings from the node's
log, and the node's memory and workers before and after.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import footprint, generators, handoff, handoff_nodes, procfs
from bench import handoff_figures as hf
from bench import roll_figures as rf
from bench.cpuquota import CpuQuotas
from bench.generators import CONNECT_TIMEOUT
from bench.harness import READY_TIMEOUT, Bench, receive_all
from bench.hundredk import _rejected
from bench.scenarios import Outcome
from bench.server import RelayNode, node_config

#: Browsers of the full scenario (``--browsers N`` sets fewer).
BROWSERS = 100_000
#: The version strings of the code the node starts with and of the code the roll brings.
BEFORE_SUFFIX = "+roll-before"
AFTER_SUFFIX = "+roll-after"
#: How often the coordinator looks for successors to put in a quota, and for the roll's end.
POLL = 0.1


@dataclass(frozen=True)
class Setup:
    """The scenario's shape: ``100k``'s node, quotas and rates, ``handoff``'s phases."""

    browsers: int = BROWSERS
    generators: int = 6
    workers: int = 6
    #: 1 post/s to 100,000 browsers, as ``100k`` posts for 30 s, held for the 4 minutes
    #: here outran the generators' 0.6 core (deliveries 10-40 s late), and relay closed
    #: 63,483 browsers as too slow, none of it the roll's doing: one post every 5 s.
    shared_rate: float = 0.2
    own_rate: float = 10.0
    #: Seconds of posting before SIGUSR2, room for the whole roll, then after it.
    before: float = 20.0
    budget: float = 150.0
    after: float = 20.0
    join_rate: float = 10.0
    #: Cores' worth of CPU each relay worker may use (each successor too), and the generators.
    worker_cores: float = 0.22
    loadgen_cores: float = 0.6
    probes: int = 100

    def handoff_setup(self) -> handoff.Setup:
        """The same shape in the ``handoff`` scenario's terms, for the parts reused from it."""
        return handoff.Setup(
            browsers=self.browsers,
            generators=self.generators,
            shared_rate=self.shared_rate,
            own_rate=self.own_rate,
            before=self.before,
            budget=self.budget,
            after=self.after,
            join_rate=self.join_rate,
            relay_cores=self.worker_cores,
            loadgen_cores=self.loadgen_cores,
            probes=self.probes,
        )


#: A smoke run's shape (``--quick``).
QUICK = Setup(browsers=2000, generators=2, workers=2, before=4.0, budget=40.0, after=4.0, probes=20)


def run(factory: Callable[[], Bench], *, name: str, setup: Setup) -> list[Outcome]:
    """Connect, post throughout, roll the workers part-way; one outcome."""
    quotas = CpuQuotas(f"relay-bench-{os.getpid()}")
    hs = setup.handoff_setup()
    with (
        tempfile.TemporaryDirectory(prefix="relay-bench-roll-") as scratch,
        quotas,
        factory() as bench,
    ):
        code, old_version = handoff_nodes.successor_checkout(Path(scratch), BEFORE_SUFFIX)
        redis = bench.redis()
        node = bench.node(node_config(broker=redis.url), workers=setup.workers, relay_src=code)
        quotas.group("loadgen", setup.loadgen_cores)
        for i, pid in enumerate(node.worker_pids()):
            quotas.group(f"worker{i + 1}", setup.worker_cores)
            quotas.add(f"worker{i + 1}", pid)
        began = time.monotonic()
        browsers = generators.start_generators(
            bench, quotas, node, hs, handoff._seqs(hs)[2], keep_sent=True
        )
        ready = receive_all(browsers, CONNECT_TIMEOUT + 30.0)
        connect = {
            "connected": sum(r["ready"] for r in ready),
            "failed": sum(sum(r["failed"].values()) for r in ready),
            "seconds": round(time.monotonic() - began, 1),
        }
        figures = _roll_under_posts(bench, quotas, node, code, setup, browsers)
        figures["connect"] = connect
        figures["versions"] = {"before": old_version, "after": figures.pop("new_version")}
        log = list(node.log)
    outcome = _outcome(name, setup, figures, quotas, log)
    outcome.latencies = figures.pop("latencies")
    return [outcome]


def _roll_under_posts(
    bench: Bench,
    quotas: CpuQuotas,
    node: RelayNode,
    code: Path,
    setup: Setup,
    browsers: list[Any],
) -> dict[str, Any]:
    """Post throughout; after ``before`` s upgrade the code and SIGUSR2; figures of it all."""
    hs = setup.handoff_setup()
    seconds = setup.before + setup.budget + setup.after
    posters, joiner = handoff._start_posting(bench, node, hs, browsers)
    throttled_before = quotas.throttling()
    machine_before = procfs.machine_cpu()
    went = time.monotonic()
    for worker in (*posters, joiner):
        worker.send({"op": "go"})
    time.sleep(max(0.0, went + setup.before - time.monotonic()))
    memory_before = _node_memory(node)
    workers_before = rf.worker_table(_status(node.admin_port))
    # Browsers the node closed or refused so far, by reason (the old workers' counters).
    rejected_before = _rejected(node.admin_port)
    new_version = handoff_nodes.set_version(code, AFTER_SUFFIX)
    started, started_wall = time.monotonic(), time.time()
    assert node.proc is not None
    node.proc.send_signal(signal.SIGUSR2)
    outcome, ended = _follow_roll(node, quotas, setup, deadline=went + setup.before + setup.budget)
    time.sleep(1.0)  # the last old worker's exit and the new one's first readings
    memory_after = _node_memory(node)
    workers_after = rf.worker_table(_status(node.admin_port))
    rejected_after = _rejected(node.admin_port)
    shared, own = posts = receive_all(posters, seconds + READY_TIMEOUT)
    attempts = joiner.receive(seconds + READY_TIMEOUT)["attempts"]
    groups = handoff._finish(browsers, posts, hs)
    machine = {k: v - machine_before[k] for k, v in procfs.machine_cpu().items()}
    figures: dict[str, Any] = {
        "roll": outcome,
        "roll_s": {"sigusr2_to_last_replaced_by_coordinator": round(ended - started, 2)},
        **{f"roll_{k}": v for k, v in rf.roll_timing(node.log, started_wall).items()},
        "node_rejected": {"before_roll": rejected_before, "new_workers_after": rejected_after},
        "workers_before": workers_before,
        "workers_after": workers_after,
        "new_version": new_version,
        "node_memory": rf.memory_change(memory_before, memory_after),
        "posts": {
            "shared_issued": shared["issued"],
            "shared_ok": shared["ok"],
            "own_issued": own["issued"],
            "own_ok": own["ok"],
            "failed": shared["issued"] + own["issued"] - shared["ok"] - own["ok"],
        },
        "posts_slow": {
            "shared": rf.slow_posts(shared, 1 / setup.shared_rate, started),
            "own": rf.slow_posts(own, 1 / setup.own_rate, started),
        },
        "posts_failed_by_status": {
            str(k): v for p in posts for k, v in p["statuses"].items() if int(k) != 200
        }
        or "none",
    }
    deliveries, latencies = handoff._deliveries(groups, started, ended)
    figures.update(deliveries)
    figures["latencies"] = latencies  # taken out again by ``run``: the plot's
    figures.update(hf.joins(attempts, started, ended))
    figures["cpu_throttled_share"] = footprint.throttled_share(
        throttled_before, quotas.throttling()
    )
    figures["machine_busy"] = round(1 - machine["idle"] / max(machine["total"], 1e-9), 3)
    figures["window_s"] = round(time.monotonic() - went, 1)
    return figures


def _follow_roll(
    node: RelayNode, quotas: CpuQuotas, setup: Setup, *, deadline: float
) -> tuple[str, float]:
    """Put each successor in a quota as it starts; wait (bounded) for the roll's end.

    The supervisor starts the successors outside any quota (it runs outside
    them); each gets a group of its own with a worker's quota as soon as its
    start is logged, a fraction of a second later. Returns how the roll
    ended (``done``, ``stopped`` or ``timed out``) and when.
    """
    placed: set[int] = set()
    while True:
        lines = list(node.log)
        for index, pid in rf.successors(lines):
            if pid in placed:
                continue
            placed.add(pid)
            # Numbered from 1 as the old workers' groups are (they were started in slot order).
            group = f"new{index + 1}"
            if group not in quotas.groups:  # a second successor for a slot shares its group
                quotas.group(group, setup.worker_cores)
            # A successor may have exited already (a failed one): the log says why.
            with contextlib.suppress(OSError):
                quotas.add(group, pid)
        ended = rf.finished(lines)
        if ended is not None:
            return ended, time.monotonic()
        if time.monotonic() > deadline:
            return "timed out", time.monotonic()
        time.sleep(POLL)  # a log line, which nothing can be told about: a bounded poll


def _node_memory(node: RelayNode) -> dict[str, Any]:
    """The node's memory now (supervisor and workers): ``footprint.node_memory``."""
    return footprint.node_memory([procfs.memory(pid) for pid in node.pids()])


def _status(admin_port: int) -> dict[str, Any] | str:
    """The node's /status/, parsed; or why it could not be read."""
    try:
        url = f"http://127.0.0.1:{admin_port}/status/"
        with urllib.request.urlopen(url, timeout=10) as reply:
            status: dict[str, Any] = json.loads(reply.read())
    except (OSError, ValueError) as exc:
        return f"unread: {exc}"
    return status


def _outcome(
    name: str, setup: Setup, figures: dict[str, Any], quotas: CpuQuotas, log: list[str]
) -> Outcome:
    """The result, with the quota note and the node's warnings and errors."""
    quota_note = (
        f"CPU quotas ({quotas.describe()}): {setup.worker_cores:g} core for each relay "
        f"worker, each in a group of its own, and for each successor (a group of its own, "
        f"entered a fraction of a second after the supervisor starts it); "
        f"{setup.loadgen_cores:g} core for the {setup.generators} load generators together; "
        "the supervisor, Redis, posters, probes, the joiner and the coordinator outside them"
        if quotas.available
        else f"no CPU quotas: {quotas.describe()}"
    )
    # The bench runs as root (for the quotas): relay's warning about that is no problem.
    problems = [
        line.strip()
        for line in log
        if (" WARNING " in line or " ERROR " in line) and "running as root" not in line
    ]
    figures["node_log_problems"] = len(problems)
    description = (
        f"{setup.browsers} idle browsers (a shared key and an own key each) on one --workers "
        f"{setup.workers} node in broker mode, {setup.shared_rate:g} posts/s to the shared key "
        f"and {setup.own_rate:g} posts/s to own keys, {setup.join_rate:g} new browsers/s; after "
        f"{setup.before:g} s the code is upgraded in place and the supervisor gets SIGUSR2: "
        "each worker is handed over to the new code in turn"
    )
    result = {
        "scenario": name,
        "description": description,
        "parameters": asdict(setup),
        "figures": figures,
        "notes": [quota_note],
        "node_log_problems": problems[:20],
        # What the supervisor said about the roll, with its times: where the time went.
        "roll_log": [line.strip() for line in log if "relay.workers:" in line][-30:],
        # And what each worker said about its handoff: where each one's time went.
        "handoff_log": [line.strip() for line in log if "relay.handoff" in line][:80],
    }
    return Outcome(result=result, latencies={})
