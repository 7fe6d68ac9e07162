"""What a large scenario's numbers mean: memory per browser, kernel socket memory, limits.

Pure: these functions take what was read from /proc (or the text itself) and
return the figures the results show, so they are tested without a node.
"""

from __future__ import annotations

from typing import Any

KIB = 1024


def parse_sockstat(text: str, page_size: int = 4096) -> dict[str, int]:
    """The TCP line of /proc/net/sockstat: sockets in use, allocated, in TIME_WAIT, memory.

    The kernel counts TCP buffer memory (``mem``) in pages; it is returned in bytes.
    """
    for line in text.splitlines():
        if line.startswith("TCP:"):
            words = line.split()[1:]
            values = dict(zip(words[::2], (int(v) for v in words[1::2]), strict=True))
            return {
                "inuse": values.get("inuse", 0),
                "alloc": values.get("alloc", 0),
                "tw": values.get("tw", 0),
                "mem_bytes": values.get("mem", 0) * page_size,
            }
    raise ValueError("no TCP line in /proc/net/sockstat")


def memory_figures(
    rss_before: list[int],
    rss_after: list[int],
    sockstat_before: dict[str, int],
    sockstat_after: dict[str, int],
    browsers: int,
    *,
    pss_before: list[int] | None = None,
    pss_after: list[int] | None = None,
    anon_before: list[int] | None = None,
    anon_after: list[int] | None = None,
    resident_before: int | None = None,
    resident_after: int | None = None,
) -> dict[str, Any]:
    """Node RSS and PSS (every process: supervisor and workers) and kernel TCP memory per browser.

    ``rss_before`` and ``rss_after`` are the node's processes' resident bytes,
    in the same order, before the first browser connected and after the last
    one subscribed; ``pss_*`` their proportional set sizes and ``anon_*``
    their anonymous resident bytes (``procfs.memory``). The RSS sum counts
    the pages the processes share (libraries, the interpreter) once per
    process, the PSS sum once: what the node takes from the machine. PSS
    shares a page out among every process mapping it, the load generators'
    Pythons too, so the node's PSS falls as they start: the anonymous sum,
    its own memory apart from files, grows by what the browsers cost.
    ``resident_*`` is the node's resident set taken as a whole
    (``procfs.resident_set_bytes``): every page any of its processes holds,
    once. KiB per browser is given for the growth and for the total.
    """
    per = max(browsers, 1)
    kernel = sockstat_after["mem_bytes"] - sockstat_before["mem_bytes"]
    figures: dict[str, Any] = {"node_processes": len(rss_after)}
    sums = {
        "rss": (rss_before, rss_after),
        "pss": (pss_before, pss_after),
        "anon": (anon_before, anon_after),
    }
    for kind, (start, end) in sums.items():
        if start is None or end is None:
            continue
        figures.update(_per_browser(kind, sum(start), sum(end), per))
        figures[f"{kind}_per_process_after_mib"] = [round(r / KIB / KIB, 1) for r in end]
    if resident_before is not None and resident_after is not None:
        figures.update(_per_browser("resident_set", resident_before, resident_after, per))
    figures.update(
        {
            "kernel_tcp_mem_growth_mib": round(kernel / KIB / KIB, 1),
            "kernel_tcp_kib_per_browser": round(kernel / per / KIB, 2),
            "tcp_sockets_in_use_growth": sockstat_after["inuse"] - sockstat_before["inuse"],
        }
    )
    return figures


def _per_browser(kind: str, before: int, after: int, browsers: int) -> dict[str, float]:
    """A node total (bytes) before and after: MiB, and KiB per browser of growth and total."""
    return {
        f"{kind}_before_mib": round(before / KIB / KIB, 1),
        f"{kind}_after_mib": round(after / KIB / KIB, 1),
        f"{kind}_growth_kib_per_browser": round((after - before) / browsers / KIB, 2),
        f"{kind}_total_kib_per_browser": round(after / browsers / KIB, 2),
    }


def node_memory(processes: list[dict[str, int]], resident_set: int | None = None) -> dict[str, Any]:
    """A node's memory from each of its processes' ``procfs.memory``: sums and the first one.

    ``processes`` starts with the supervisor (or is the lone process). The sum
    of PSS is what the node takes from the machine, each shared library page
    counted once; the sum of RSS counts such a page once per process; the sum
    of private memory counts only what no other process maps;
    ``resident_set`` (``procfs.resident_set_bytes``) is every page any of
    them holds, once. MiB.
    """

    def mib(value: int) -> float:
        return round(value / KIB / KIB, 1)

    kinds = ("rss", "pss", "anon", "file")
    figures: dict[str, Any] = {"node_processes": len(processes)}
    figures.update({f"{kind}_mib": mib(sum(p[kind] for p in processes)) for kind in kinds})
    figures.update({f"first_{kind}_mib": mib(processes[0][kind]) for kind in kinds})
    figures["per_process_pss_mib"] = [mib(p["pss"]) for p in processes]
    if all("private" in p for p in processes):
        figures["private_mib"] = mib(sum(p["private"] for p in processes))
        figures["per_process_private_mib"] = [mib(p["private"]) for p in processes]
    if resident_set is not None:
        figures["resident_set_mib"] = mib(resident_set)
    return figures


def throttled_share(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, float]:
    """Per cgroup, the share of scheduler periods in which it hit its CPU quota."""
    shares = {}
    for name, end in after.items():
        start = before.get(name, {"periods": 0, "throttled_periods": 0})
        periods = end["periods"] - start["periods"]
        throttled = end["throttled_periods"] - start["throttled_periods"]
        shares[name] = round(throttled / periods, 3) if periods else 0.0
    return shares


def limits(
    *,
    connections_per_worker: list[int],
    fd_limit: int,
    per_address: int,
    port_range: tuple[int, int],
    memory_used_bytes: int,
    memory_total_bytes: int,
) -> dict[str, Any]:
    """How close the run came to each limit: descriptors, ports, memory.

    (CPU is read from the quotas' throttling, ``throttled_share``.)
    """
    busiest = max(connections_per_worker, default=0)
    ports = port_range[1] - port_range[0] + 1
    return {
        "fd_limit": fd_limit,
        "busiest_worker_connections": busiest,
        "busiest_worker_fd_share": round(busiest / fd_limit, 3) if fd_limit else None,
        "ports_per_source_address": ports,
        "browsers_per_source_address": per_address,
        "port_share": round(per_address / ports, 3),
        "memory_used_share": round(memory_used_bytes / memory_total_bytes, 3),
    }


def quota_use(figures: dict[str, Any], worker_cores: float, loadgen_cores: float) -> str:
    """One sentence: the cores each side used against its quota, and how often it hit it."""
    throttled = figures.get("cpu_throttled_share", {})
    workers = [share for name, share in throttled.items() if name.startswith("worker")]
    used = figures.get("worker_cores_used", [])
    return (
        f"the relay workers used {sum(used):.2f} of the {worker_cores * len(used):.2f} cores "
        f"of their quotas (each hit its quota in at most {max(workers, default=0):.0%} of "
        f"the scheduler periods); the generators used {figures.get('loadgen_cores_used', 0):.2f} "
        f"of their {loadgen_cores:g} (hit in {throttled.get('loadgen', 0):.0%})"
    )


def connect_figures(reports: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Browsers connected, refused and failed (by error), and the rate, from the generators."""
    connected = sum(r["ready"] for r in reports)
    failed: dict[str, int] = {}
    for report in reports:
        for kind, count in report["failed"].items():
            failed[kind] = failed.get(kind, 0) + count
    return {
        "connected": connected,
        "refused": failed.get("ConnectionRefusedError", 0),
        "failed": sum(failed.values()),
        "failed_by_error": failed or "none",
        "failed_examples": sorted({e for r in reports for e in r.get("failed_examples", ())}),
        "connect_seconds": round(seconds, 1),
        "connects_per_s": round(connected / seconds, 1) if seconds > 0 else None,
        "generator_seconds": [round(r["seconds"], 1) for r in reports],
    }
