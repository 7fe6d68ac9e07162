"""Render the ``nodes`` section of ``/status/`` as a table, for ``relay status --cluster``.

Pure: takes the decoded section and returns text. One row per process that
announced itself under the broker prefix or to its mesh peers (a ``--workers`` node has a row per
worker), then the cluster's totals, laid out by ``columns.py`` like the
CLI's other tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relay.cli.columns import columns, pairs
from relay.cli.wording import counted, format_duration

_HEADERS = [
    "NODE",
    "WORKER",
    "STATE",
    "BROWSERS",
    "IN/S",
    "OUT/S",
    "BROKER",
    "PEERS",
    "LAST SEEN",
    "VERSION",
    "FINGERPRINT",
]


def render_nodes(section: Mapping[str, Any]) -> str:
    """Format the ``nodes`` section: every announced process, then the totals."""
    members = [m for m in section.get("members") or [] if isinstance(m, Mapping)]
    prefix = section.get("prefix", "?")
    # A mesh has no prefix: its nodes announce to one another (README, "Presence").
    lines = ["Cluster of mesh peers" if prefix is None else f"Cluster under broker prefix {prefix}"]
    if members:
        lines += columns(_HEADERS, [_row(member) for member in members])
    else:
        lines.append("  (no node has announced itself yet)")
    totals = section.get("totals") or {}
    lines += ["", "Totals", *pairs(_totals(totals))]
    error = section.get("last_error")
    if error:
        lines += ["", f"This node could not reach Redis for its last reading: {error}"]
    lines += [
        "",
        f"* the process that answered; stale after {_seconds(section, 'stale_after_seconds')} "
        f"without an announcement, gone after {_seconds(section, 'gone_after_seconds')}",
    ]
    return "\n".join(lines) + "\n"


def _row(member: Mapping[str, Any]) -> list[str]:
    worker = member.get("worker")
    seen = member.get("last_seen_seconds")
    peers = int(member.get("peers") or 0)
    return [
        str(member.get("node", "?")),
        ("-" if worker is None else str(worker)) + (" *" if member.get("self") else ""),
        str(member.get("state", "?")),
        str(member.get("browsers", "?")),
        str(member.get("rate_in", "?")),
        str(member.get("rate_out", "?")),
        str(member.get("broker", "?")),
        "-" if not peers else f"{member.get('peers_up', '?')}/{peers} up",
        "?" if not isinstance(seen, int | float) else format_duration(seen) + " ago",
        str(member.get("version", "?")),
        str(member.get("fingerprint", "?")),
    ]


def _totals(totals: Mapping[str, Any]) -> list[tuple[str, str]]:
    def number(key: str) -> int:
        value = totals.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return [
        (
            "nodes",
            f"{counted(number('nodes'), 'node')}, "
            f"{counted(number('processes'), 'process', 'processes')} ({number('stale')} stale)",
        ),
        ("browsers", str(number("browsers"))),
        (
            "messages",
            f"{totals.get('rate_in', '?')}/s in (each node takes every message), "
            f"{totals.get('rate_out', '?')}/s delivered",
        ),
    ]


def _seconds(section: Mapping[str, Any], key: str) -> str:
    value = section.get(key)
    return "?" if not isinstance(value, int | float) else format_duration(value)
