"""Render a node's ``GET /status/`` answer as plain text, for ``relay status``.

Pure: takes the decoded JSON and returns text. The sections relay adds
(``broker``, ``overload``) read as sentences, as the summary above them does;
keys this module does not know are listed too, their names in words and
their values plain (``yes``/``no``, ``-`` for none), a section as a block of
its own, so the table hides nothing ``--json`` would show.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relay.cli.columns import columns, pairs
from relay.cli.wording import counted, format_duration
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
    """Format ``/status/`` as a summary block, a block per section and a table of the peers."""
    lines = [
        f"relay node {status.get('fingerprint') or '?'}, instance "
        f"{status.get('instance') or 'default'}",
        *pairs(_summary(status)),
    ]
    extra = [(k, v) for k, v in status.items() if k not in _SHOWN and not isinstance(v, dict)]
    if extra:
        lines += pairs([(_words(key), _plain(value)) for key, value in extra])
    for name, section in status.items():
        if name not in _SHOWN and isinstance(section, dict) and section:
            title, named = _SECTIONS.get(name, (_words(name).capitalize(), _no_known_keys))
            rows, known = named(section)
            rows += [(_words(k), _plain(v)) for k, v in section.items() if k not in known]
            lines += ["", title, *pairs(rows)]
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


def _summary(status: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Aphlict's own figures, in words."""
    age = status.get("history.age")
    return [
        ("uptime", _milliseconds(status.get("uptime"))),
        (
            "browsers",
            f"{status.get('clients.active', '?')} connected, "
            f"{status.get('clients.total', '?')} since start",
        ),
        ("messages", f"{status.get('messages.in', '?')} in, {status.get('messages.out', '?')} out"),
        (
            "history",
            f"{status.get('history.size', '?')} kept"
            + ("" if age is None else f", the oldest from {_milliseconds(age)} ago"),
        ),
        ("protocol", f"version {status.get('version', '?')}"),
    ]


#: What a section's renderer returns: its rows, and the keys they cover.
_Named = tuple[list[tuple[str, str]], frozenset[str]]


def _broker(section: Mapping[str, Any]) -> _Named:
    """The ``broker`` section (``relay.core.snapshot.BrokerReading``) in words."""
    since = section.get("since_seconds")
    state = str(section.get("state", "?"))
    if isinstance(since, int | float):
        state += f" for {format_duration(since)}"
    rows = [
        ("redis", _plain(section.get("url"))),
        ("state", state),
        ("last error", _plain(section.get("last_error"))),
        (
            "posts",
            f"{_number(section, 'published')} published, {_number(section, 'queue')} queued, "
            f"{_number(section, 'dropped')} dropped",
        ),
        ("received", _count(section, "received", "message") + ", this node's own included"),
        ("reconnects", _number(section, "reconnects")),
        (
            "resubscribed",
            _count(section, "stale_subscriptions", "time") + ", the subscription gone silent",
        ),
    ]
    keys = {"url", "state", "since_seconds", "last_error", "published", "queue", "dropped"}
    return rows, frozenset(keys | {"received", "reconnects", "stale_subscriptions"})


def _overload(section: Mapping[str, Any]) -> _Named:
    """The ``overload`` section (``relay.links.overload``) in words."""
    policy = section.get("policy")
    if policy in _POLICIES:
        policy = f"{policy}: {_POLICIES[policy]}"
    rows = [
        ("policy", _plain(policy)),
        ("now", "a peer's queue is full" if section.get("active") else "every peer keeps up"),
        (
            "so far",
            f"{_count(section, 'episodes', 'episode')}, {_count(section, 'refused', 'post')} "
            "refused",
        ),
    ]
    return rows, frozenset({"policy", "active", "episodes", "refused"})


def _nodes(section: Mapping[str, Any]) -> _Named:
    """The ``nodes`` section (``relay.links.presence``) summed up; ``--cluster`` has the table."""
    totals = section.get("totals")
    totals = totals if isinstance(totals, Mapping) else {}
    rows = [
        _where(section.get("prefix")),
        (
            "announced",
            f"{_count(totals, 'nodes', 'node')}, "
            f"{_number(totals, 'processes')} processes ({_number(totals, 'stale')} stale), "
            f"{_number(totals, 'browsers')} browsers; relay status --cluster lists them",
        ),
        ("last error", _plain(section.get("last_error"))),
        ("joined", _places(section.get("joined"))),
        ("left", _places(section.get("left"))),
    ]
    shown = {"prefix", "totals", "members", "last_error", "unreadable", "joined", "left"}
    return rows, frozenset(
        shown | {"interval_seconds", "stale_after_seconds", "gone_after_seconds"}
    )


def _process(section: Mapping[str, Any]) -> _Named:
    """The ``process`` section (``relay.core.snapshot.ProcessReading``): the code running now."""
    rows = [
        ("code", f"relay {_plain(section.get('version'))}, pid {_number(section, 'pid')}"),
        ("started", f"{_plain(section.get('started_at'))} (UTC)"),
        ("adopted", _count(section, "adopted", "browser connection") + " in a handoff"),
    ]
    return rows, frozenset({"version", "pid", "started_at", "adopted"})


def _where(prefix: object) -> tuple[str, str]:
    """Where the nodes announce: under a broker prefix, or to their mesh peers (no prefix)."""
    if prefix is None:
        return ("announced to", "the mesh peers")
    return ("broker prefix", _plain(prefix))


def _places(value: object) -> str:
    """Nodes by place (``host:port``), comma-separated; ``-`` for none."""
    if not isinstance(value, list) or not value:
        return "-"
    return ", ".join(str(place) for place in value)


def _no_known_keys(section: Mapping[str, Any]) -> _Named:
    return [], frozenset()


#: ``peering.when_full``'s values, as the operator needs them explained.
_POLICIES = {
    "refuse": "new posts are answered 503 while a peer's queue is full",
    "drop": "a full peer queue drops its oldest messages",
}

#: Sections relay adds to ``/status/``, by key: their title and their renderer.
_SECTIONS = {
    "process": ("Process", _process),
    "broker": ("Broker", _broker),
    "overload": ("Overload", _overload),
    "nodes": ("Nodes of the cluster", _nodes),
}


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


def _milliseconds(ms: object) -> str:
    """A duration given in milliseconds, as the CLI writes durations; ``?`` if not a number."""
    if isinstance(ms, bool) or not isinstance(ms, int | float):
        return "?"
    return format_duration(ms / 1000)


def _count(section: Mapping[str, Any], key: str, noun: str) -> str:
    """``section[key]`` things: ``1 post``, ``3 posts``, ``? posts`` when not a count."""
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return f"? {noun}s"
    return counted(value, noun)


def _number(section: Mapping[str, Any], key: str) -> str:
    value = section.get(key)
    return "?" if value is None else _plain(value)


def _words(key: str) -> str:
    """A JSON key as words: ``last_error`` and ``last.error`` read ``last error``."""
    return key.replace("_", " ").replace(".", " ")


def _plain(value: object) -> str:
    """A JSON value as an operator reads it: yes/no, ``-`` for none, no Python spelling."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return f"({counted(len(value), 'entry', 'entries')}; see --json)"
    return "-" if value is None else str(value)
