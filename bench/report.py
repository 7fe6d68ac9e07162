"""Turning results into the readable table (Markdown) and the plot (PNG)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

#: (figure, scenario, path to the value, unit, Aphlict, comparison, target)
TARGETS: list[tuple[str, str, tuple[str, ...], str, str, str, float]] = [
    (
        "server CPU per delivery, 1,000 browsers x 100 posts/s",
        "fanout",
        ("server_cpu_us_per_delivery",),
        "µs",
        "6.5-7.4 µs",
        "<=",
        4.0,
    ),
    (
        "delivery latency p99, 1,000 browsers x 20 posts/s",
        "fanout-latency",
        ("latency_ms", "p99"),
        "ms",
        "~140 ms",
        "<=",
        30.0,
    ),
    (
        "RSS per idle connection, 5,000 browsers",
        "idle-5k",
        ("rss_per_connection_kib",),
        "KiB",
        "10.7 KB",
        "<=",
        8.0,
    ),
    (
        "posts/s, 10 browsers, lone node",
        "throughput",
        ("posts_per_s",),
        "posts/s",
        "8,700",
        ">=",
        10_000,
    ),
    (
        "posts/s, 10 browsers, node relaying to 2 peers",
        "throughput-2-peers",
        ("posts_per_s",),
        "posts/s",
        "~3,000 (1 peer)",
        ">=",
        6_000,
    ),
    (
        "20,000 browsers, 1 post/s: latency p99",
        "fanout-20k",
        ("latency_ms", "p99"),
        "ms",
        "(not measured)",
        "<=",
        250.0,
    ),
    (
        "20,000 browsers, 1 post/s: lost deliveries",
        "fanout-20k",
        ("lost",),
        "lost",
        "(not measured)",
        "<=",
        0,
    ),
    (
        "3-node mesh, 1,000 posts/s: cross-node latency p99",
        "mesh-1000",
        ("latency_ms", "p99"),
        "ms",
        "5-10 s",
        "<=",
        50.0,
    ),
    (
        "3-node mesh, 2,000 posts/s: cross-node latency p99",
        "mesh-2000",
        ("latency_ms", "p99"),
        "ms",
        "5-10 s",
        "<=",
        100.0,
    ),
    (
        "3-node mesh, 4,000 posts/s asked: accepted posts lost on node 2",
        "mesh-4000",
        ("lost",),
        "lost",
        "little",
        "<=",
        0,
    ),
    (
        "3-node mesh, 4,000 posts/s asked: duplicates on node 2",
        "mesh-4000",
        ("duplicated",),
        "duplicated",
        "~50 per message",
        "<=",
        0,
    ),
    (
        "extra latency per peer hop p99, 3-node mesh",
        "cluster-hop",
        ("added_by_hop_ms", "p99"),
        "ms",
        "",
        "<=",
        5.0,
    ),
    (
        "fan-out deliveries/s at saturation, --workers 2 over --workers 1",
        "workers",
        ("speedup",),
        "x",
        "(one process)",
        ">=",
        1.6,
    ),
    (
        "fan-out at saturation, --workers 1 and 2: lost deliveries",
        "workers",
        ("lost",),
        "lost",
        "",
        "<=",
        0,
    ),
]


def _lookup(figures: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = figures
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def check_targets(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target of the issue with the measured value and whether it is met (None: not run)."""
    checked = []
    for figure, scenario, path, unit, aphlict, op, target in TARGETS:
        result = results.get(scenario)
        value = None if result is None else _lookup(result.get("figures", {}), path)
        met = None
        if value is not None:
            met = value <= target if op == "<=" else value >= target
        checked.append(
            {
                "figure": figure,
                "scenario": scenario,
                "unit": unit,
                "aphlict": aphlict,
                "target": f"{'≤' if op == '<=' else '≥'} {target:,g} {unit}".strip(),
                "measured": value,
                "met": met,
            }
        )
    return checked


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _mesh_comparison(scenarios: dict[str, dict[str, Any]]) -> list[str]:
    """The mesh scenario's rates side by side: relay, and Aphlict when it ran too."""
    rates = sorted(
        int(name.removeprefix("mesh-"))
        for name, result in scenarios.items()
        if re.fullmatch(r"mesh-\d+", name) and "figures" in result
    )
    if not rates:
        return []
    lines = [
        "",
        "## 3-node mesh: what node 1 accepts, and what reaches node 2's browsers",
        "",
        "Lost and duplicated count deliveries (browser x message). A browser that reads",
        "slower than it is sent to is closed by the node once its buffer is full",
        "(`browsers.outbound_buffer_bytes`); what it then misses counts as lost.",
        "`node_messages_in` in each rate's table says what reached node 2 itself.",
        "",
        "| asked posts/s | relay accepted/s | lost | duplicated | browsers closed "
        "| cross-node p99 ms | Aphlict accepted/s | lost | duplicated | browsers closed "
        "| cross-node p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate in rates:
        cells = [f"{rate:,}"]
        for prefix in ("mesh", "aphlict-mesh"):
            figures = scenarios.get(f"{prefix}-{rate}", {}).get("figures")
            if figures is None:
                cells += ["-"] * 5
                continue
            cells += [
                _fmt(figures["posts_per_s"]),
                _fmt(figures["lost"]),
                _fmt(figures["duplicated"]),
                _fmt(figures["browsers_closed"]),
                _fmt(figures["latency_ms"]["p99"]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(document: dict[str, Any]) -> str:
    """The whole run as Markdown: machine, targets, then every scenario's figures."""
    machine = document["machine"]
    lines = [
        f"# relay benchmark, {document['date']}",
        "",
        f"- machine: {machine['nproc']} CPUs, {machine['cpu_model']}, "
        f"{machine['memory_gib']} GiB, Linux {machine['kernel']}",
        f"- Python {machine['python']}, open-files hard limit {machine['fd_hard_limit']}",
        f"- relay {document['relay']['commit']}"
        + (" (with uncommitted changes)" if document["relay"]["dirty"] else "")
        + f", from {document['relay']['path']}",
        f"- command: `{document['command']}`, {document['seconds']:.0f} s"
        + (" (quick smoke run: not comparable to the targets)" if document["quick"] else ""),
    ]
    # A run of scenarios that no target is about (say, 100k alone) has no table of targets.
    targets = document["targets"]
    if not any(t["measured"] is not None for t in targets):
        targets = []
    if targets:
        lines += [
            "",
            "## Targets",
            "",
            "| figure | Aphlict | target | relay | met |",
            "|---|---|---|---|---|",
        ]
    for t in targets:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        measured = _fmt(t["measured"]) + (f" {t['unit']}" if t["measured"] is not None else "")
        lines.append(f"| {t['figure']} | {t['aphlict']} | {t['target']} | {measured} | {met} |")
    lines += _mesh_comparison(document["scenarios"])
    for result in document["scenarios"].values():
        lines += ["", f"## {result['scenario']}", ""]
        if "error" in result:
            lines += [f"failed: `{result['error']}`"]
            continue
        lines += [result["description"], ""]
        figures = result["figures"]
        if "points" in figures:
            keys = list(figures["points"][0]) if figures["points"] else []
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            for point in figures["points"]:
                lines.append("| " + " | ".join(_fmt(point[k]) for k in keys) + " |")
        else:
            lines += ["| figure | value |", "|---|---|"]
            for key, value in figures.items():
                if isinstance(value, dict):
                    value = ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
                lines.append(f"| {key} | {_fmt(value)} |")
        for note in result.get("notes", []):
            lines += ["", f"note: {note}"]
    return "\n".join(lines) + "\n"


def plot(
    path: Path,
    latencies: dict[str, np.ndarray],
    sweep: list[dict[str, Any]] | None,
    title: str,
    timeline: dict[str, list[float]] | None = None,
) -> None:
    """Latency tails on the left; on the right throughput against subscribers, or a timeline.

    The timeline (``bench.hundredk``) is drawn when there is no sweep: TCP
    connections and the node's memory over the scenario.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for name, values in latencies.items():
        if values.size == 0:
            continue
        ordered = np.sort(values)
        # The share of deliveries slower than x: p50 reads at 0.5, p99 at 0.01.
        slower = 1.0 - np.arange(ordered.size) / ordered.size
        # Log-spaced points are enough for a smooth curve and keep the tail.
        picks = np.unique(np.geomspace(1, ordered.size, 2000).astype(int) - 1)
        picks = np.union1d(picks, np.linspace(0, ordered.size - 1, 500).astype(int))
        left.plot(ordered[picks], slower[picks], label=f"{name} (n={ordered.size:,})")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_ylim(1e-4, 1.05)
    left.axhline(0.01, color="grey", linewidth=0.8, linestyle=":")
    left.set_xlabel("delivery latency, POST to receipt (ms, log scale)")
    left.set_ylabel("fraction of deliveries slower (log scale; p99 at 0.01)")
    left.set_title("latency distribution")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8, loc="lower right")
    if not sweep and timeline:
        _plot_timeline(right, timeline)
    elif sweep:
        counts = [p["subscribers"] for p in sweep]
        right.plot(counts, [p["deliveries_per_s"] for p in sweep], "o-", label="deliveries/s")
        right.plot(counts, [p["posts_per_s"] for p in sweep], "s--", label="posts/s")
        right.set_xscale("log")
        right.set_yscale("log")
        right.legend()
    else:
        right.text(0.5, 0.5, "sweep not run", ha="center", va="center")
    if sweep or not timeline:
        right.set_xlabel("subscribers per post (log scale)")
        right.set_ylabel("per second (log scale)")
        right.set_title("throughput against subscriber count (posting flat out)")
        right.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: What begins at each of a timeline's ``phases`` marks.
PHASES = ("1 post/s to the shared key", "10 posts/s to own keys")
#: The same for a handoff's timeline (``bench.handoff``).
HANDOFF_PHASES = ("the successor starts", "the old process exits")


def _plot_timeline(axes: Any, timeline: dict[str, list[float]]) -> None:
    """Connections (TCP sockets in use, halved: both ends are on this machine) and node RSS.

    A handoff's timeline instead shows the browsers each relay process holds.
    """
    seconds = timeline["t"]
    if "old_browsers" in timeline:
        axes.plot(seconds, timeline["old_browsers"], color="tab:blue", label="old process")
        axes.plot(seconds, timeline["new_browsers"], color="tab:orange", label="new process")
        for at, label in zip(timeline.get("phases", []), HANDOFF_PHASES, strict=False):
            axes.axvline(at, color="grey", linestyle=":", linewidth=1)
            axes.annotate(
                label,
                (at, 0.5),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=8,
                ha="right",
                va="center",
            )
        axes.set_xlabel("seconds since the posts began")
        axes.set_ylabel("browsers held (open descriptors beyond an idle node's)")
        axes.set_title("the handoff: browsers held by each relay process")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
        return
    axes.plot(seconds, [n / 2 for n in timeline["tcp_inuse"]], color="tab:blue")
    for at, label in zip(timeline.get("phases", []), PHASES, strict=False):
        axes.axvline(at, color="grey", linestyle=":", linewidth=1)
        axes.annotate(
            label,
            (at, 0.02),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=8,
            ha="right",
            va="bottom",
        )
    axes.set_xlabel("seconds since the browsers began to connect")
    axes.set_ylabel("TCP connections (sockets in use / 2)", color="tab:blue")
    axes.set_title("connecting, then posting: connections and node memory")
    axes.grid(True, alpha=0.3)
    memory = axes.twinx()
    memory.plot(seconds, timeline["rss_mib"], color="tab:red")
    memory.set_ylabel("node RSS, all processes (MiB)", color="tab:red")
