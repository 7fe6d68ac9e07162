"""Render a node's ``GET /status/`` answer as plain text, for ``relay status``.

Pure: takes the decoded JSON and returns text. Keys this module does not
know (sections other parts of relay add, such as ``broker``) are listed as
they are, a section as a block of its own, so the table hides nothing
``--json`` would show.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relay.cli.columns import columns, pairs
from relay.cli.wording import format_duration

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
        *pairs(
            [
                ("uptime", _milliseconds(status.get("uptime"))),
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
                    + ("" if age is None else f", the oldest from {_milliseconds(age)} ago"),
                ),
                ("protocol", f"version {status.get('version', '?')}"),
            ]
        ),
    ]
    extra = [(k, v) for k, v in status.items() if k not in _SHOWN and not isinstance(v, dict)]
    if extra:
        lines += pairs([(key, _plain(value)) for key, value in extra])
    for name, section in status.items():
        if name not in _SHOWN and isinstance(section, dict) and section:
            # A section of its own (the broker link, say): one line per field.
            lines += ["", name.replace("_", " ").capitalize()]
            lines += pairs([(key, _plain(value)) for key, value in section.items()])
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
    name = f"{peer.get('protocol')}://{peer.get('host')}:{peer.get('port')}"
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


def _milliseconds(ms: object) -> str:
    """A duration given in milliseconds, as the CLI writes durations; ``?`` if not a number."""
    if isinstance(ms, bool) or not isinstance(ms, int | float):
        return "?"
    return format_duration(ms / 1000)


def _plain(value: object) -> str:
    if isinstance(value, dict | list):
        return f"({len(value)} entries; see --json)"
    return "-" if value is None else str(value)
