"""One fuzz input: what is sent on one connection, and how the connection ends; saved as JSON."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

Port = Literal["admin", "client"]
#: How the fuzzer leaves the connection once everything is written: shut its
#: sending side and read to the end, leave it open and read a while, or reset it.
Ending = Literal["half-close", "linger", "reset"]


@dataclass
class Case:
    """What one connection sends; ``chunks`` are written one by one, in order.

    On the client port the first chunk is the handshake and the rest are
    written only once the node has answered it (whatever it answered).
    """

    port: Port
    #: Which generator made it, for the report ("admin/host", "client/deep-command").
    note: str
    chunks: list[bytes]
    ending: Ending = "half-close"
    #: Set by the run: the seed and the case's place in its lane ("3-1207").
    origin: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Bytes sent in all."""
        return sum(len(chunk) for chunk in self.chunks)

    def to_json(self) -> dict[str, Any]:
        """The case as JSON-ready values (bytes in base64)."""
        return {
            "port": self.port,
            "note": self.note,
            "chunks": [base64.b64encode(chunk).decode() for chunk in self.chunks],
            "ending": self.ending,
            "origin": self.origin,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Case:
        """The case ``to_json`` wrote."""
        return cls(
            port=value["port"],
            note=value["note"],
            chunks=[base64.b64decode(chunk) for chunk in value["chunks"]],
            ending=value["ending"],
            origin=value.get("origin", {}),
        )


def save(path: Path, cases: list[Case], why: str, seed: int) -> Path:
    """Write ``cases`` for replay (``python -m tests.fuzz --replay PATH``); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"seed": seed, "why": why, "cases": [case.to_json() for case in cases]}
    path.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    return path


def load(path: Path) -> tuple[str, list[Case]]:
    """The reason and the cases of a file ``save`` wrote."""
    record = orjson.loads(path.read_bytes())
    return record["why"], [Case.from_json(case) for case in record["cases"]]
