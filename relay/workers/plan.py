"""What the supervisor tells its workers: the node's ports and where the workers meet.

The supervisor writes ``plan.json`` into its private run directory before it
spawns anyone; a worker reads it at start and again at each reload (through
``apply``), so a listener configured on port 0 gets the one port the whole
node shares instead of a port of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from relay.config import Config
from relay.errors import StartupError

PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class NodePlan:
    """The node as a whole: how many workers, and the port of each server entry."""

    count: int
    #: Port of each ``servers`` entry, by its index in the config file.
    ports: tuple[int, ...]
    #: ``time.monotonic()`` when the supervisor started (system-wide on Linux).
    started: float

    def write(self, directory: Path) -> None:
        """Save the plan into ``directory`` for the workers to read."""
        data = {"count": self.count, "ports": list(self.ports), "started": self.started}
        (directory / PLAN_FILE).write_bytes(orjson.dumps(data))

    @classmethod
    def read(cls, directory: Path) -> NodePlan:
        """Load the plan the supervisor wrote.

        Raises:
            StartupError: the file is missing or malformed (not started by a supervisor).
        """
        path = directory / PLAN_FILE
        try:
            data = orjson.loads(path.read_bytes())
            return cls(int(data["count"]), tuple(int(p) for p in data["ports"]), data["started"])
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise StartupError(f"worker: cannot read the supervisor's plan {path}: {exc}") from None


@dataclass(frozen=True)
class WorkerRole:
    """One worker's place in the node."""

    #: The supervisor's private run directory (mode 0700).
    directory: Path
    index: int
    #: How many times the supervisor has restarted this worker's slot.
    generation: int
    plan: NodePlan = field(compare=False)

    @classmethod
    def load(cls, directory: str, index: int, generation: int) -> WorkerRole:
        """The role given on the worker's command line, with the plan it names.

        Raises:
            StartupError: the plan cannot be read or does not have this index.
        """
        path = Path(directory)
        plan = NodePlan.read(path)
        if not 0 <= index < plan.count:
            raise StartupError(f"worker: index {index} is outside the plan's {plan.count} workers")
        return cls(path, index, generation, plan)

    def socket_path(self, index: int) -> Path:
        """Where worker ``index`` answers its siblings."""
        return sibling_socket(self.directory, index)

    def apply(self, config: Config) -> Config:
        """``config`` with every server on the port the node shares.

        Raises:
            StartupError: the file's servers no longer match the plan (a reload
                that changed them): listeners keep their addresses until a restart.
        """
        if len(config.servers) != len(self.plan.ports):
            raise StartupError(
                "servers: the number of servers changed; that needs a restart of the node"
            )
        servers = tuple(
            server.model_copy(update={"port": port})
            for server, port in zip(config.servers, self.plan.ports, strict=True)
        )
        return config.model_copy(update={"servers": servers})


def sibling_socket(directory: Path, index: int) -> Path:
    """The unix socket on which worker ``index`` answers its siblings."""
    return directory / f"worker-{index}.sock"


def notify_socket(directory: Path, index: int) -> Path:
    """The datagram socket on which worker ``index`` tells the supervisor its state."""
    return directory / f"notify-{index}.sock"


def handoff_socket(directory: Path, index: int) -> Path:
    """Where worker ``index`` waits for its successor (``relay.workers.roll``)."""
    return directory / f"handoff-{index}.sock"
