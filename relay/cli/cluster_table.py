"""Render a status snapshot as plain-text tables, for ``relay cluster-status``.

Pure: takes the JSON-able dict ``ClusterStatusMonitor.snapshot`` returns
(or the same dict fetched from the admin port) and returns text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relay.cli.columns import columns
from relay.cli.wording import format_duration
from relay.cluster_status.verdicts.replication import SHOW_DELAY_AFTER_SECONDS

__all__ = ["render_table"]


def render_table(snapshot: Mapping[str, Any]) -> str:
    """Format a snapshot as a mode line, a database table and a repository table."""
    lines = [
        f"Cluster status seen from {snapshot.get('observer') or '?'} "
        f"(instance {snapshot.get('instance') or 'default'})",
        _mode_line(snapshot),
        "",
        "Databases",
    ]
    databases = snapshot.get("databases") or []
    if databases:
        lines += columns(
            ["HOST", "ROLE", "CONNECTION", "LATENCY", "REPLICATION", "DELAY", "HEALTH", "MESSAGE"],
            [_database_row(db) for db in databases],
        )
    else:
        lines.append("  (no database hosts configured)")
    lines += ["", "Repository services"]
    lines += _repository_lines(snapshot.get("repositories"))
    return "\n".join(lines) + "\n"


def _mode_line(snapshot: Mapping[str, Any]) -> str:
    mode = snapshot.get("mode") or "unknown"
    reason = snapshot.get("modeReason")
    return f"Mode: {mode}" + (f" ({reason})" if reason else "")


def _database_row(db: Mapping[str, Any]) -> list[str]:
    connection = db.get("connection") or {}
    replication = db.get("replication") or {}
    health = db.get("health") or {}
    disabled = bool(db.get("disabled"))
    conn_status = "disabled" if disabled else connection.get("status") or "pending"
    latency = connection.get("latencyMs")
    delay = replication.get("delay")
    healthy = "healthy" if health.get("healthy", True) else "UNHEALTHY"
    counts = "" if disabled else f" ({health.get('up', 0)}/{health.get('window', 5)} up)"
    message = connection.get("message") or replication.get("message") or ""
    return [
        str(db.get("ref", "?")),
        str(db.get("role", "?")),
        conn_status,
        "-" if latency is None else f"{latency:.1f} ms",
        replication.get("status") or "-",
        "-"
        if delay is None or delay <= SHOW_DELAY_AFTER_SECONDS
        else format_duration(float(delay)),
        healthy + counts,
        message,
    ]


def _repository_lines(repos: Mapping[str, Any] | None) -> list[str]:
    if repos is None:
        return ["  (repository status is switched off)"]
    source = repos.get("source")
    lines = [f"  read from {source}"] if source else []
    if not repos.get("available", False):
        error = repos.get("error") or "not read yet"
        return [*lines, f"  unavailable: {error}"]
    services = repos.get("services") or []
    if not services:
        return [*lines, "  (no repository cluster services)"]
    lines += columns(
        ["SERVICE", "STATUS", "DEVICES", "REPOS", "SYNC", "LAG"],
        [
            [
                str(s.get("name")),
                "closed" if s.get("closed") else "open",
                f"{len(s.get('activeDevices') or [])} active",
                str(len(s.get("repositories") or [])),
                str(s.get("verdict")),
                "-" if s.get("lag") is None else format_duration(float(s["lag"])),
            ]
            for s in services
        ],
    )
    problems = [
        f"  {s.get('name')}: {message}" for s in services for message in s.get("messages") or []
    ]
    if problems:
        lines += ["", "Needs attention", *problems]
    return lines
