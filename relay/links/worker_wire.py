"""The record a worker sends its siblings: its ``WorkerReading`` as versioned JSON.

Pure functions; no I/O. One JSON object::

    {"v": 1, "index": 0, "pid": 4242, "restarts": 0, "version": "0.1.0",
     "snapshot": {"fingerprint": ..., "instances": {...}, "peers": [...], ...},
     "latency": {"bounds": [...], "counts": [...], "total": 0.25},
     "recent": [{"end": 8123.5, "count": 3, "total": 0.012, "maximum": 0.006}, ...]}

The cluster-status reading and the ``nodes`` section are not sent (see
``WorkerReading``). A reader refuses another version, or any field of the
wrong type, with ``ValueError``: the answering worker lists that sibling as
"unreadable" rather than adding up figures it cannot trust. Unknown keys
are ignored, so a later build may add fields within the same version
(``recent`` came so: a record without it has no recent latencies).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

import orjson

from relay.core.latency_slots import LatencySlot
from relay.core.snapshot import (
    BrokerReading,
    InstanceReading,
    NodeSnapshot,
    OverloadReading,
    PeerReading,
)
from relay.core.worker_reading import LatencyReading, WorkerReading

#: The record's format; a sibling with another one is "unreadable".
VERSION = 1

_T = TypeVar("_T")

#: What each annotation of the flat readings accepts (``bool`` is no ``int`` here).
_CHECKS: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
}


def encode(reading: WorkerReading) -> bytes:
    """``reading`` as the record a sibling reads."""
    snapshot = reading.snapshot
    return orjson.dumps(
        {
            "v": VERSION,
            "index": reading.index,
            "pid": reading.pid,
            "restarts": reading.restarts,
            "snapshot": {
                "fingerprint": snapshot.fingerprint,
                "uptime_ms": snapshot.uptime_ms,
                "connections": snapshot.connections,
                "rejected": dict(snapshot.rejected),
                "subscriptions": snapshot.subscriptions,
                # orjson writes each flat reading's fields as an object.
                "instances": dict(snapshot.instances),
                "peers": list(snapshot.peers),
                "broker": snapshot.broker,
                "overload": snapshot.overload,
                "instances_overflowed": snapshot.instances_overflowed,
                "alerts": None if snapshot.alerts is None else dict(snapshot.alerts),
                "history_bytes": snapshot.history_bytes,
            },
            "latency": reading.latency,
            "recent": list(reading.recent),
            "version": reading.version,
        }
    )


def decode(raw: bytes) -> WorkerReading:
    """The reading in a sibling's record.

    Raises:
        ValueError: not JSON, another version, or a field missing or of the
            wrong type (the message names it).
    """
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"a worker record that is not JSON: {exc}") from None
    record = _object(record, "the record")
    if record.get("v") != VERSION:
        raise ValueError(f"a worker record of version {record.get('v')!r}, not {VERSION}")
    return WorkerReading(
        index=_field(record, "index", "int"),
        pid=_field(record, "pid", "int"),
        restarts=_field(record, "restarts", "int"),
        snapshot=_snapshot(_object(record.get("snapshot"), "snapshot")),
        latency=_latency(_object(record.get("latency"), "latency")),
        recent=_recent(record.get("recent", [])),
        # Optional within format 1: during an upgrade an older worker may not send it.
        version=_field(record, "version", "str | None") or "",
    )


def _snapshot(fields: Mapping[str, Any]) -> NodeSnapshot:
    instances = _object(fields.get("instances"), "snapshot.instances")
    peers = fields.get("peers")
    if not isinstance(peers, list):
        raise ValueError("snapshot.peers: not a list")
    broker, overload, alerts = fields.get("broker"), fields.get("overload"), fields.get("alerts")
    return NodeSnapshot(
        fingerprint=_field(fields, "fingerprint", "str"),
        uptime_ms=_field(fields, "uptime_ms", "int"),
        connections=_field(fields, "connections", "int"),
        rejected=_counts(fields.get("rejected"), "snapshot.rejected"),
        subscriptions=_field(fields, "subscriptions", "int"),
        instances={
            name: _flat(InstanceReading, value, f"snapshot.instances.{name}")
            for name, value in instances.items()
        },
        peers=tuple(
            _flat(PeerReading, peer, f"snapshot.peers[{n}]") for n, peer in enumerate(peers)
        ),
        cluster_status=None,
        broker=None if broker is None else _flat(BrokerReading, broker, "snapshot.broker"),
        overload=None
        if overload is None
        else _flat(OverloadReading, overload, "snapshot.overload"),
        instances_overflowed=_field(fields, "instances_overflowed", "int"),
        alerts=None if alerts is None else _counts(alerts, "snapshot.alerts"),
        # A worker of an older build does not send it.
        history_bytes=_field(fields, "history_bytes", "int") if "history_bytes" in fields else 0,
    )


def _latency(fields: Mapping[str, Any]) -> LatencyReading:
    bounds, counts = fields.get("bounds"), fields.get("counts")
    if not isinstance(bounds, list) or not all(_is(b, "float") for b in bounds):
        raise ValueError("latency.bounds: not a list of numbers")
    if not isinstance(counts, list) or not all(_is(c, "int") for c in counts):
        raise ValueError("latency.counts: not a list of whole numbers")
    if len(counts) != len(bounds) + 1:
        raise ValueError("latency.counts: not one more than the bounds")
    return LatencyReading(
        tuple(float(b) for b in bounds), tuple(counts), float(_field(fields, "total", "float"))
    )


def _recent(slots: object) -> tuple[LatencySlot, ...]:
    if not isinstance(slots, list):
        raise ValueError("recent: not a list")
    return tuple(_flat(LatencySlot, slot, f"recent[{n}]") for n, slot in enumerate(slots))


def _flat(cls: type[_T], value: object, where: str) -> _T:
    """An instance of the flat dataclass ``cls`` from a JSON object, each field checked."""
    fields = _object(value, where)
    given: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name in fields:
            given[field.name] = _field(fields, field.name, str(field.type), where)
        elif field.default is dataclasses.MISSING:
            raise ValueError(f"{where}.{field.name}: missing")
    return cls(**given)


def _field(fields: Mapping[str, Any], name: str, annotation: str, where: str = "") -> Any:
    """``fields[name]``, checked against ``annotation`` ("int", "str | None", ...)."""
    value: Any = fields.get(name)
    kind, _, optional = annotation.partition(" | ")
    if value is None and optional == "None":
        return None
    if not _is(value, kind):
        prefix = f"{where}." if where else ""
        raise ValueError(f"{prefix}{name}: expected {kind}, got {value!r}")
    return float(value) if kind == "float" else value


def _is(value: object, kind: str) -> bool:
    if kind != "bool" and isinstance(value, bool):
        return False
    return isinstance(value, _CHECKS[kind])


def _counts(value: object, where: str) -> dict[str, int]:
    counts = _object(value, where)
    if not all(_is(count, "int") for count in counts.values()):
        raise ValueError(f"{where}: not whole numbers")
    return dict(counts)


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: not an object")
    return value
