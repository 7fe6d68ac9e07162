"""Render a node's ``GET /status/`` answer as plain text, for ``relay status``.

Pure: takes the decoded JSON and returns text. Keys this module does not
know (sections other parts of relay add, such as ``broker``) are listed as
they are, a section as a block of its own, so the table hides nothing
``--json`` would show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from relay.cli.columns import columns
from relay.config.hosts import url_host

#: The keys the first block shows; everything else is listed after it.
_SHOWN = frozenset(
    {
        "instance",
        "uptime",
        "clients.active",
        "clients.total",
        "messages.in",
        "messages.out",
        "version",
        "history.size",
        "history.age",
        "fingerprint",
        "cluster",
    }
)


def render_status(status: Mapping[str, Any]) -> str:
    """Format ``/status/`` as a summary block and a table of the cluster peers."""
    age = status.get("history.age")
    lines = [
        f"relay node {status.get('fingerprint') or '?'}, instance "
        f"{status.get('instance') or 'default'}",
        *_pairs(
            [
                ("uptime", _duration(status.get("uptime"))),
                (
                    "browsers",
                    f"{status.get('clients.active', '?')} connected, "
                    f"{status.get('clients.total', '?')} since start",
                ),
                (
                    "messages",
                    f"{status.get('messages.in', '?')} in, {status.get('messages.out', '?')} out",
                ),
                (
                    "history",
                    f"{status.get('history.size', '?')} kept"
                    + ("" if age is None else f", the oldest from {_duration(age)} ago"),
                ),
                ("protocol", f"version {status.get('version', '?')}"),
            ]
        ),
    ]
    extra = [(k, v) for k, v in status.items() if k not in _SHOWN and not isinstance(v, dict)]
    if extra:
        lines += _pairs([(key, _plain(value)) for key, value in extra])
    for name, section in status.items():
        if name not in _SHOWN and isinstance(section, dict) and section:
            # A section of its own (the broker link, say): one line per field.
            lines += ["", name.replace("_", " ").capitalize()]
            lines += _pairs([(key, _plain(value)) for key, value in section.items()])
    lines += ["", "Cluster peers"]
    peers = status.get("cluster") or []
    if peers:
        lines += columns(
            ["PEER", "STATE", "SENT", "FAILED", "DROPPED", "QUEUE", "LATENCY", "LAST ERROR"],
            [_peer_row(peer) for peer in peers],
        )
    else:
        lines.append("  (no peers configured)")
    return "\n".join(lines) + "\n"


def _peer_row(peer: Mapping[str, Any]) -> list[str]:
    name = f"{peer.get('protocol')}://{url_host(str(peer.get('host')))}:{peer.get('port')}"
    if peer.get("self"):
        return [name, "this node", "", "", "", "", "", ""]
    latency = peer.get("last_latency_ms")
    return [
        name,
        str(peer.get("state", "?")),
        str(peer.get("sent", 0)),
        str(peer.get("failed", 0)),
        str(peer.get("dropped", 0)),
        str(peer.get("queue", 0)),
        "-" if latency is None else f"{latency:.1f} ms",
        str(peer.get("last_error") or ""),
    ]


def _pairs(pairs: Sequence[tuple[str, str]]) -> list[str]:
    width = max(len(name) for name, _ in pairs)
    return [f"  {name.ljust(width)}  {value}" for name, value in pairs]


def _duration(ms: object) -> str:
    """Milliseconds as ``3d 4h``, ``2h 5m``, ``1m 30s`` or ``12.5 s``."""
    if not isinstance(ms, int | float):
        return "?"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    days, hours, minutes = whole // 86400, whole // 3600 % 24, whole // 60 % 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {whole % 60}s"


def _plain(value: object) -> str:
    if isinstance(value, dict | list):
        return f"({len(value)} entries; see --json)"
    return "-" if value is None else str(value)
