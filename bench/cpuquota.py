"""CPU quotas for benchmark processes through Linux cgroups (v1 ``cpu`` or v2 ``cpu.max``).

A large scenario runs the node's workers and the load generators on the
same few cores. Without quotas the generators, which do more work per
delivery than relay, take CPU from the workers and the figures describe the
scheduler rather than relay. Each group here is a cgroup with a hard quota
(cores' worth of CPU per period); processes are moved in by pid. Needs root
and a cgroup file system with the CPU controller; ``CpuQuotas.available``
says whether this machine has one, and scenarios run without quotas (and
say so) when it does not.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

#: The scheduler period the quotas are expressed in (the kernel's default).
PERIOD_US = 100_000

_V1 = Path("/sys/fs/cgroup/cpu")
_V2 = Path("/sys/fs/cgroup")


def _hierarchy() -> tuple[Path, int] | None:
    """The writable CPU cgroup root and its version, or None."""
    if (_V1 / "cpu.cfs_quota_us").exists() and os.access(_V1, os.W_OK):
        return _V1, 1
    controllers = _V2 / "cgroup.controllers"
    if (
        controllers.exists()
        and "cpu" in controllers.read_text().split()
        and os.access(_V2, os.W_OK)
    ):
        return _V2, 2
    return None


def weight_for(nice: int, version: int) -> int:
    """The cgroup weight matching a task's ``nice``: the scheduler's 1.25x per step.

    cgroup v1's ``cpu.shares`` is 1,024 at niceness 0, v2's ``cpu.weight`` 100.
    """
    if version == 1:
        return max(2, min(262_144, round(1024 * 1.25**-nice)))
    return max(1, min(10_000, round(100 * 1.25**-nice)))


class CpuQuotas:
    """Named cgroups under one parent, each with a hard CPU quota; removed on exit."""

    def __init__(self, name: str) -> None:
        """Groups go under ``name`` (unique per run) in the CPU hierarchy, if there is one."""
        found = _hierarchy()
        self.version = found[1] if found else 0
        self.parent = found[0] / name if found else None
        self.groups: dict[str, Path] = {}
        #: The parent's scheduling weight against the machine's other processes.
        self.weight = 0

    @property
    def available(self) -> bool:
        """Whether quotas can be set on this machine (root, a CPU controller)."""
        return self.parent is not None

    def describe(self) -> str:
        """Which mechanism carries the quotas, for the results."""
        if self.parent is None:
            return "none (no writable cgroup CPU controller)"
        knob = "cpu.cfs_quota_us" if self.version == 1 else "cpu.max"
        described = f"cgroup v{self.version} {knob}, period {PERIOD_US // 1000} ms"
        if self.weight:
            knob = "cpu.shares" if self.version == 1 else "cpu.weight"
            described += f", the groups' {knob} {self.weight} as for their niceness"
        return described

    def __enter__(self) -> CpuQuotas:
        """Create the parent group (its children hold the quotas)."""
        if self.parent is not None:
            self.parent.mkdir()
            if self.version == 2:
                (self.parent / "cgroup.subtree_control").write_text("+cpu")
            # A cgroup competes with the other processes as one task of the default
            # weight, whatever its processes' niceness: without this, --nice would
            # favour nothing in a group over the machine's other work.
            nice = os.getpriority(os.PRIO_PROCESS, 0)
            if nice:
                self.weight = weight_for(nice, self.version)
                knob = "cpu.shares" if self.version == 1 else "cpu.weight"
                (self.parent / knob).write_text(str(self.weight))
        return self

    def group(self, name: str, cores: float) -> None:
        """Create group ``name`` limited to ``cores`` cores' worth of CPU time."""
        if self.parent is None:
            return
        path = self.parent / name
        path.mkdir()
        quota = max(1000, round(cores * PERIOD_US))
        if self.version == 1:
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        self.groups[name] = path

    def add(self, name: str, pid: int) -> None:
        """Move process ``pid`` (all its threads) into group ``name``."""
        if name in self.groups:
            (self.groups[name] / "cgroup.procs").write_text(str(pid))

    def throttling(self) -> dict[str, dict[str, float]]:
        """Per group: scheduler periods, periods throttled, and seconds throttled so far."""
        found: dict[str, dict[str, float]] = {}
        for name, path in self.groups.items():
            stat: dict[str, Any] = {}
            for line in (path / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                stat[key] = int(value)
            throttled = (
                stat.get("throttled_time", 0) / 1e9
                if self.version == 1
                else stat.get("throttled_usec", 0) / 1e6
            )
            found[name] = {
                "periods": stat.get("nr_periods", 0),
                "throttled_periods": stat.get("nr_throttled", 0),
                "throttled_s": throttled,
            }
        return found

    def __exit__(self, *exc_info: object) -> None:
        """Move what is left back to the root group and remove every group."""
        if self.parent is None:
            return
        root = self.parent.parent / "cgroup.procs"
        for path in [*self.groups.values(), self.parent]:
            with contextlib.suppress(OSError):
                for pid in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        root.write_text(pid)
                path.rmdir()
