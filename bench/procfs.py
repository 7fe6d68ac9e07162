"""Reading a process's CPU time, memory and open files, and the machine, from /proc."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bench import footprint

#: Clock ticks per second, the unit of utime and stime in /proc/PID/stat.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time used so far by process ``pid`` (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after it are plain numbers.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (a supervisor's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def pin(pid: int, cpus: set[int]) -> None:
    """Keep every thread of process ``pid`` on ``cpus`` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


def command_name(pid: int) -> str:
    """Process ``pid``'s command name (/proc/PID/comm: what prctl(PR_SET_NAME) set)."""
    return Path(f"/proc/{pid}/comm").read_text().strip()


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS in /proc/{pid}/status")


def memory(pid: int) -> dict[str, int]:
    """What process ``pid``'s resident memory is made of, in bytes.

    ``rss`` counts every page mapped, shared library pages included, so a page
    shared by seven processes is counted seven times in their sum; ``pss``
    (/proc/PID/smaps_rollup) charges each process its share of such pages, so
    the processes' PSS add up to what they take from the machine. ``anon`` and
    ``file`` are RssAnon and RssFile from /proc/PID/status: RssAnon counts an
    anonymous page a worker still shares with the template it was forked
    from (``relay.workers.spawn``) in each of them. ``private`` (Private_Clean
    plus Private_Dirty) counts only the pages no other process maps.
    """
    found = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        found[key] = int(value.split()[0]) * 1024
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            status[key] = int(value.split()[0]) * 1024
    return {
        "rss": found["Rss"],
        "pss": found["Pss"],
        "anon": status["RssAnon"],
        "file": status["RssFile"],
        "private": found["Private_Clean"] + found["Private_Dirty"],
    }


#: In a /proc/PID/pagemap entry: the page is resident, and its frame number's bits.
_PRESENT = np.uint64(1 << 63)
_FRAME = np.uint64((1 << 55) - 1)


def resident_set_bytes(pids: Iterable[int]) -> int | None:
    """The resident set of processes ``pids`` taken together: each physical page once, in bytes.

    What one process's VmRSS is to one process, for several: every page any of
    them maps and holds in memory, counted once however many of them map it
    (the pages workers still share with the template they were forked from,
    or with each other's libraries). The RSS sum counts such a page once per
    process, and PSS charges the processes only their share of a page they
    share with others (a library the load generators map too); this is
    neither. It reads each mapping's page frame numbers from
    /proc/PID/pagemap, which only root sees: None for others (they read zeros).
    """
    frames: list[np.ndarray] = []
    page = os.sysconf("SC_PAGESIZE")
    for pid in pids:
        with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                span = line.split(maxsplit=1)[0]
                start, end = (int(bound, 16) for bound in span.split("-"))
                if line.endswith("[vsyscall]"):
                    continue  # outside the process's own page tables
                pagemap.seek(start // page * 8)
                entries = np.frombuffer(pagemap.read((end - start) // page * 8), np.uint64)
                resident = entries[(entries & _PRESENT) != 0] & _FRAME
                frames.append(resident)
    found = np.unique(np.concatenate(frames)) if frames else np.empty(0, np.uint64)
    if found.size and not found.any():
        return None
    return int(found.size) * page


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def machine_cpu() -> dict[str, float]:
    """CPU seconds of the whole machine so far, from /proc/stat, by kind.

    ``tasks`` is user, nice and system time, ``interrupts`` time in interrupt
    and softirq context (loopback TCP is partly processed there), ``steal``
    time the hypervisor gave to others, and ``total`` everything including
    idle. With tick-based accounting (no ``CONFIG_IRQ_TIME_ACCOUNTING``) a
    softirq tick is also charged to the process it interrupted: the
    ``interrupts`` time then overlaps processes' own CPU times.
    """
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return {
        "tasks": (user + nice + system) / CLOCK_TICKS,
        "interrupts": (irq + softirq) / CLOCK_TICKS,
        "steal": steal / CLOCK_TICKS,
        "idle": (idle + iowait) / CLOCK_TICKS,
        "total": sum(fields[:8]) / CLOCK_TICKS,  # guest time is already counted in user
    }


def meminfo() -> dict[str, int]:
    """The machine's memory from /proc/meminfo (MemTotal, MemAvailable, Slab...), in bytes."""
    found = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            found[key] = int(value.split()[0]) * 1024
    return found


def raise_fd_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit; return the new limit.

    Child processes (relay nodes and load generators) inherit it.
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def machine_description() -> dict[str, object]:
    """The facts needed to compare results between machines."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "fd_hard_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
    }


def wait_until_quiet(limit: float, busy_below: float = 0.15, sample: float = 1.0) -> float:
    """Wait (at most ``limit`` seconds) until the machine is less than ``busy_below`` busy.

    Busy is measured over ``sample`` seconds. Returns the last measured busy
    fraction (0 to 1), whether or not it got below the threshold.
    """
    deadline = time.monotonic() + limit
    while True:
        before = machine_cpu()
        time.sleep(sample)
        after = machine_cpu()
        total = after["total"] - before["total"]
        busy = 1 - (after["idle"] - before["idle"]) / total if total > 0 else 0.0
        if busy < busy_below or time.monotonic() >= deadline:
            return busy


def sockstat() -> dict[str, int]:
    """The machine's TCP sockets now (``footprint.parse_sockstat`` of /proc/net/sockstat)."""
    return footprint.parse_sockstat(
        Path("/proc/net/sockstat").read_text(), os.sysconf("SC_PAGESIZE")
    )


def wait_for_time_wait(limit: float, below: int = 1000, interval: float = 1.0) -> int:
    """Wait (at most ``limit`` seconds) until fewer than ``below`` TCP sockets are in TIME_WAIT.

    A scenario that ends with 100,000 browsers leaves their closed sockets in
    TIME_WAIT for a minute, each holding its local port; a port that bind()
    took stays out of connect()'s own choice meanwhile, so the next scenario's
    browsers would fail with "cannot assign requested address". Returns the
    count last read.
    """
    deadline = time.monotonic() + limit
    while True:
        count = sockstat()["tw"]
        if count < below or time.monotonic() >= deadline:
            return count
        time.sleep(interval)  # a bounded poll of the kernel's count
