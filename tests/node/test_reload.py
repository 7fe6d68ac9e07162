"""What a reload changes and what waits for a restart, decided before anything changes."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from relay.config import parse_config
from relay.config.tls import ListenerContexts
from relay.errors import StartupError
from relay.node.reload import prepare, restart_notes
from tests.support import local_config


def test_listeners_pidfile_broker_and_alerts_only_change_with_a_restart(tmp_path: Path) -> None:
    old = parse_config(local_config())
    new = parse_config(
        {
            **local_config(
                pidfile=str(tmp_path / "relay.pid"),
                broker={"url": "redis://127.0.0.1:6379/0"},
                alerts={"url": "https://hooks.example.com/relay"},
                limits={"max_subscriptions": 7},
            ),
            "servers": [
                {"type": "client", "port": 22280, "listen": "127.0.0.1"},
                {"type": "admin", "port": 0, "listen": "127.0.0.1"},
            ],
        }
    )
    assert restart_notes(old, new) == [
        "servers changed: listeners keep their old addresses until a restart",
        "pidfile changed: it takes effect at the next start",
        "broker changed: it takes effect at the next start",
        "alerts changed: it takes effect at the next start",
    ]
    assert restart_notes(old, parse_config(local_config(limits={"max_subscriptions": 7}))) == []


def test_prepare_loads_the_new_secret_and_settings_and_notes_a_new_status_section(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    old = parse_config(local_config())
    new = parse_config(
        local_config(admin={"secret_file": str(secret), "allowed_networks": ["10.0.0.0/8"]})
    )
    change = prepare(old, new, ListenerContexts())
    assert change.secret is not None
    assert change.secret.matches("s3cret")
    assert change.admin.secret is change.secret
    assert [str(network) for network in change.admin.allowed_networks] == ["10.0.0.0/8"]
    assert change.notes == []
    assert not change.monitor_changed


def test_prepare_refuses_a_secret_it_cannot_read(tmp_path: Path) -> None:
    new = parse_config(local_config(admin={"secret_file": str(tmp_path / "missing")}))
    with pytest.raises(StartupError, match=r"admin\.secret_file: cannot read .*missing"):
        prepare(parse_config(local_config()), new, ListenerContexts())


def test_prepare_refuses_a_connection_cap_over_the_open_files_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    new = parse_config(local_config(limits={"max_connections": hard}))
    with pytest.raises(StartupError, match=r"^limits\.max_connections is \d+, but this process"):
        prepare(parse_config(local_config()), new, ListenerContexts())
