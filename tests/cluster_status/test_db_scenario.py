"""Database health against real MariaDB servers the tests start themselves."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from typing import Any

import pytest

from relay.cluster_status import driver
from relay.cluster_status.verdicts.events import DATABASES_TYPE
from tests.cluster_status.helpers import (
    MONITOR_PASSWORD,
    NOPRIV_USER,
    RC_USER,
    WAIT,
    EventSink,
    StartMonitor,
    connection_status,
    fast_config,
    host_entry,
    host_of,
    replication_status,
    wait_until,
)
from tests.mariadb_harness import MariaDBFactory, MariaDBServer, make_lagging, pick_free_port

Pair = tuple[MariaDBServer, MariaDBServer]


def is_db(message: dict[str, Any]) -> bool:
    return bool(message["type"] == DATABASES_TYPE)


async def first_state(sink: EventSink) -> dict[str, Any]:
    return await sink.wait_for(is_db)


async def test_master_and_replica_okay(shared_pair: Pair, start_monitor: StartMonitor) -> None:
    master, replica = shared_pair
    config = fast_config([host_entry(master, "master"), host_entry(replica, "replica")])
    monitor, sink = await start_monitor(config)
    message = await first_state(sink)
    assert message["key"] == "relay.cluster.databases"
    assert message["subscribers"] == ["relay.cluster.databases"]
    assert len(message["uniqueID"]) == 32
    data = message["data"]
    assert (data["mode"], data["modeReason"]) == ("read-write", None)
    for server, role in ((master, "master"), (replica, "replica")):
        entry = host_of(message, server.port)
        assert entry["role"] == role
        assert entry["connection"]["status"] == "okay"
        assert entry["connection"]["latencyMs"] > 0
        assert entry["replication"]["status"] == "okay"
        assert entry["health"]["healthy"] is True
    assert host_of(message, replica.port)["replication"]["delay"] == 0
    assert host_of(message, replica.port)["replication"]["masterHost"] == "127.0.0.1"
    # The same state is readable without a browser.
    snapshot = monitor.reading().as_dict()
    assert snapshot["mode"] == "read-write"
    assert [d["connection"]["status"] for d in snapshot["databases"]] == ["okay", "okay"]


async def test_master_that_replicates(shared_pair: Pair, start_monitor: StartMonitor) -> None:
    _master, replica = shared_pair
    _, sink = await start_monitor(fast_config([host_entry(replica, "master")]))
    message = await first_state(sink)
    assert replication_status(message, replica.port) == "master-replica"
    assert "127.0.0.1" in host_of(message, replica.port)["replication"]["message"]


async def test_replica_that_does_not_replicate(
    shared_pair: Pair, start_monitor: StartMonitor
) -> None:
    master, _replica = shared_pair
    config = fast_config([host_entry(master, "replica")])
    _, sink = await start_monitor(config)
    message = await first_state(sink)
    assert replication_status(message, master.port) == "replica-none"
    # No master configured at all: Phorge degrades to read-only.
    assert message["data"]["mode"] == "read-only"
    assert message["data"]["modeReason"] == "no master is configured"


async def test_wrong_password_is_auth(shared_pair: Pair, start_monitor: StartMonitor) -> None:
    master, _ = shared_pair
    config = fast_config([host_entry(master, "master", password="not-the-password")])
    _, sink = await start_monitor(config)
    message = await first_state(sink)
    assert connection_status(message, master.port) == "auth"
    assert "Access denied" in host_of(message, master.port)["connection"]["message"]
    assert host_of(message, master.port)["replication"] is None


async def test_user_without_the_privilege_is_replication_client(
    shared_pair: Pair, start_monitor: StartMonitor
) -> None:
    master, replica = shared_pair
    config = fast_config(
        [
            host_entry(master, "master", user=NOPRIV_USER),
            host_entry(replica, "replica", user=NOPRIV_USER),
        ]
    )
    monitor, sink = await start_monitor(config)
    message = await first_state(sink)
    for server in (master, replica):
        entry = host_of(message, server.port)
        assert entry["connection"]["status"] == "replication-client"
        # MariaDB 10.11 answers 1227 and names the privilege it wants.
        assert "#1227" in entry["connection"]["message"]
        assert "SLAVE MONITOR" in entry["connection"]["message"]
        assert entry["replication"] is None
    # The spec counts only "okay" as a successful check: without the privilege
    # the hosts go unhealthy after five checks and Phorge would go read-only.
    await wait_until(lambda: all(d.health.down == 5 for d in monitor.reading().databases))
    snapshot = monitor.reading().as_dict()
    assert [d["health"]["healthy"] for d in snapshot["databases"]] == [False, False]
    assert snapshot["mode"] == "read-only"


async def test_replication_client_alone_is_not_enough_on_mariadb_10_11(
    shared_pair: Pair, start_monitor: StartMonitor
) -> None:
    # Phorge's docs say to grant REPLICATION CLIENT; since MariaDB 10.5.9 that
    # grant means BINLOG MONITOR and SHOW REPLICA STATUS wants SLAVE MONITOR.
    master, _ = shared_pair
    grants = master.sql(f"SHOW GRANTS FOR '{RC_USER}'@'127.0.0.1'")
    assert "BINLOG MONITOR" in next(iter(grants[0].values()))
    _, sink = await start_monitor(fast_config([host_entry(master, "master", user=RC_USER)]))
    message = await first_state(sink)
    assert connection_status(message, master.port) == "replication-client"


async def test_replica_monitor_is_an_alias_that_suffices(
    mariadb: MariaDBFactory, start_monitor: StartMonitor
) -> None:
    server = await asyncio.to_thread(mariadb.start, "alias", server_id=1)
    server.create_user("relay_alias", MONITOR_PASSWORD, ["REPLICA MONITOR"])
    config = fast_config([host_entry(server, "master", user="relay_alias")])
    _, sink = await start_monitor(config)
    message = await first_state(sink)
    assert connection_status(message, server.port) == "okay"


async def test_nothing_listening_is_fail(start_monitor: StartMonitor) -> None:
    port = pick_free_port()
    config = fast_config(
        [{"host": "127.0.0.1", "port": port, "role": "master", "pass": MONITOR_PASSWORD}]
    )
    _, sink = await start_monitor(config)
    message = await first_state(sink)
    assert connection_status(message, port) == "fail"
    assert "#2003" in host_of(message, port)["connection"]["message"]
    assert "refused" in host_of(message, port)["connection"]["message"].lower()


async def test_stopped_sql_thread_is_not_replicating(
    pair: Pair, start_monitor: StartMonitor
) -> None:
    master, replica = pair
    config = fast_config([host_entry(master, "master"), host_entry(replica, "replica")])
    _, sink = await start_monitor(config)
    await first_state(sink)
    await asyncio.to_thread(replica.stop_sql_thread)
    stopped = await sink.wait_for(
        lambda m: is_db(m) and replication_status(m, replica.port) == "not-replicating"
    )
    assert "SQL thread: No" in host_of(stopped, replica.port)["replication"]["message"]
    await asyncio.to_thread(replica.start_sql_thread)
    await sink.wait_for(
        lambda m: is_db(m) and replication_status(m, replica.port) == "okay",
        after=sink.messages.index(stopped) + 1,
    )


async def test_a_new_cause_of_not_replicating_is_sent(
    pair: Pair, start_monitor: StartMonitor
) -> None:
    master, replica = pair
    config = fast_config([host_entry(replica, "replica")])
    monitor, sink = await start_monitor(config)
    await first_state(sink)
    await asyncio.to_thread(replica.stop_sql_thread)
    paused = await sink.wait_for(
        lambda m: is_db(m) and replication_status(m, replica.port) == "not-replicating"
    )
    assert "IO thread: Yes" in host_of(paused, replica.port)["replication"]["message"]
    # Now the master dies too: still not-replicating (the SQL thread never
    # ran in between), but for a new reason the operator must be told.
    await asyncio.to_thread(master.kill)

    def io_lost() -> bool:
        replication = monitor.reading().databases[0].replication
        return replication is not None and "Last_IO_Error" in (replication.message or "")

    await wait_until(io_lost)
    lost = await sink.wait_for(
        lambda m: "Last_IO_Error" in (host_of(m, replica.port)["replication"]["message"] or ""),
        type_=DATABASES_TYPE,
        after=sink.messages.index(paused) + 1,
        within=2,
    )
    assert replication_status(lost, replica.port) == "not-replicating"
    assert "IO thread: Connecting" in host_of(lost, replica.port)["replication"]["message"]


async def test_the_failed_statement_is_not_published(
    pair: Pair, start_monitor: StartMonitor
) -> None:
    # A user created on the replica by hand, then on the master: the replica's
    # SQL thread stops, and MariaDB's Last_SQL_Error quotes the whole
    # statement, the new user's password in clear included.
    master, replica = pair
    replica.create_user("phd_app", "whatever")
    password = "Clear-Text-App-Pw-7731"
    config = fast_config([host_entry(replica, "replica")])
    monitor, sink = await start_monitor(config)
    await first_state(sink)
    await asyncio.to_thread(
        master.sql, "CREATE USER 'phd_app'@'127.0.0.1' IDENTIFIED BY %s", args=(password,)
    )
    broken = await sink.wait_for(
        lambda m: "Last_SQL_Error" in (host_of(m, replica.port)["replication"]["message"] or ""),
        type_=DATABASES_TYPE,
    )
    message = host_of(broken, replica.port)["replication"]["message"]
    # The cause stays, the statement goes: every subscriber gets this text.
    assert "Operation CREATE USER failed for 'phd_app'@'127.0.0.1'" in message
    assert password not in json.dumps(broken)
    assert password not in json.dumps(monitor.reading().as_dict())


async def test_lagging_replica_is_replica_slow(pair: Pair, start_monitor: StartMonitor) -> None:
    master, replica = pair
    config = fast_config([host_entry(master, "master"), host_entry(replica, "replica")])
    _, sink = await start_monitor(config)
    await first_state(sink)
    # A delayed replica holding back a back-dated event: lag at once, no waiting.
    await asyncio.to_thread(make_lagging, master, replica, 120)
    slow = await sink.wait_for(
        lambda m: is_db(m) and replication_status(m, replica.port) == "replica-slow"
    )
    assert host_of(slow, replica.port)["replication"]["delay"] >= 120
    assert "at risk" in host_of(slow, replica.port)["replication"]["message"]


async def test_a_delay_worth_showing_is_sent_but_stays_okay(
    pair: Pair, start_monitor: StartMonitor
) -> None:
    master, replica = pair
    config = fast_config([host_entry(master, "master"), host_entry(replica, "replica")])
    _, sink = await start_monitor(config)
    await first_state(sink)
    await asyncio.to_thread(make_lagging, master, replica, 10)
    behind = await sink.wait_for(
        lambda m: (
            is_db(m) and ((host_of(m, replica.port)["replication"] or {}).get("delay") or 0) > 1
        )
    )
    assert replication_status(behind, replica.port) == "okay"
    assert 10 <= host_of(behind, replica.port)["replication"]["delay"] <= 30


async def test_killed_master_goes_unhealthy_then_read_only_and_recovers(
    pair: Pair, start_monitor: StartMonitor
) -> None:
    master, replica = pair
    config = fast_config([host_entry(master, "master"), host_entry(replica, "replica")])
    monitor, sink = await start_monitor(config)
    first = await first_state(sink)
    assert first["data"]["mode"] == "read-write"

    await asyncio.to_thread(master.kill)
    down = await sink.wait_for(
        lambda m: is_db(m) and not host_of(m, master.port)["health"]["healthy"]
    )
    # Five failed checks in a row, and only then.
    assert host_of(down, master.port)["health"]["down"] == 5
    assert (down["data"]["mode"], down["data"]["modeReason"]) == (
        "read-only",
        f"master 127.0.0.1:{master.port} is unhealthy",
    )
    before_down = sink.messages[: sink.messages.index(down)]
    assert all(m["data"]["mode"] == "read-write" for m in before_down if is_db(m))
    # The replica is untouched by the master's fall.
    assert host_of(down, replica.port)["health"]["healthy"] is True

    mark = len(sink.messages)
    await asyncio.to_thread(master.restart)
    up = await sink.wait_for(
        lambda m: is_db(m) and host_of(m, master.port)["health"]["healthy"], after=mark
    )
    assert host_of(up, master.port)["health"]["up"] == 5
    assert up["data"]["mode"] == "read-write"
    # In between (master answering again, window still mixed) nothing changed
    # health or mode.
    between = [m for m in sink.messages[mark : sink.messages.index(up)] if is_db(m)]
    assert all(m["data"]["mode"] == "read-only" for m in between)
    assert all(not host_of(m, master.port)["health"]["healthy"] for m in between)
    assert monitor.reading().as_dict()["mode"] == "read-write"


async def test_unchanged_polls_send_nothing_and_late_subscribers_get_the_state(
    shared_pair: Pair, start_monitor: StartMonitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = 0
    original = driver.DatabaseChecker.check

    async def counting_check(self: driver.DatabaseChecker) -> Any:
        nonlocal checks
        checks += 1
        return await original(self)

    monkeypatch.setattr(driver.DatabaseChecker, "check", counting_check)
    master, replica = shared_pair
    config = fast_config([host_entry(master, "master"), host_entry(replica, "replica")])
    _, sink = await start_monitor(config)
    first = await first_state(sink)
    seen = checks
    await wait_until(lambda: checks >= seen + 20)  # ten more checks per host
    assert sink.of_type(DATABASES_TYPE) == [first]


async def test_a_hanging_host_never_delays_the_others(
    shared_pair: Pair, start_monitor: StartMonitor
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept, then never send the server greeting

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    hang_port = server.sockets[0].getsockname()[1]
    master, _ = shared_pair
    config = fast_config(
        [
            {"host": "127.0.0.1", "port": hang_port, "role": "replica"},
            host_entry(master, "master"),
        ],
        connect_timeout_seconds=2,
    )
    monitor, sink = await start_monitor(config)
    try:
        # The good host completes five checks while the hanging one is still
        # inside its first.
        def progress() -> bool:
            hosts = {d["port"]: d for d in monitor.reading().as_dict()["databases"]}
            return (
                hosts[master.port]["health"]["up"] == 5 and hosts[hang_port]["connection"] is None
            )

        await wait_until(progress, within=4)
        assert accepted  # it really connected and hung
        timed_out = await sink.wait_for(is_db, within=10)
        assert connection_status(timed_out, hang_port) == "fail"
        assert host_of(timed_out, hang_port)["connection"]["message"] == (
            "timed out after 2 s while connecting"
        )
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_name_the_resolver_never_answers_delays_no_other_host(
    shared_pair: Pair, start_monitor: StartMonitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A resolver that never answers for one name (a dead DNS server for its
    # zone), stood in for here: a lookup can not be cancelled, so every check
    # of that host left a thread stuck in getaddrinfo.
    dead_name = "db-behind-a-dead-resolver.example"
    release = threading.Event()
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == dead_name:
            release.wait(WAIT * 3)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real_getaddrinfo(host, *args, **kwargs)

    checks: dict[str, int] = {}
    original = driver.DatabaseChecker.check

    async def counting_check(self: driver.DatabaseChecker) -> Any:
        label = self._target.label
        checks[label] = checks.get(label, 0) + 1
        return await original(self)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(driver.DatabaseChecker, "check", counting_check)
    master, _ = shared_pair
    config = fast_config(
        [
            # By name, so its checks need lookups too.
            {**host_entry(master, "master"), "host": "localhost"},
            {"host": dead_name, "port": 3306, "role": "replica"},
        ],
        connect_timeout_seconds=0.2,
    )
    monitor, sink = await start_monitor(config)
    try:
        # More checks of the dead name than asyncio's default executor has
        # threads: without a lookup of its own per name, the master's lookups
        # would by now wait behind the stuck ones.
        threads = min(32, (os.cpu_count() or 1) + 4)
        await wait_until(lambda: checks.get(f"{dead_name}:3306", 0) > threads + 5, within=WAIT)
        seen = checks[f"localhost:{master.port}"]
        await wait_until(lambda: checks[f"localhost:{master.port}"] >= seen + 5)
        master_states = [connection_status(m, master.port) for m in sink.of_type(DATABASES_TYPE)]
        assert set(master_states) == {"okay"}
        snapshot = monitor.reading().as_dict()
        assert snapshot["mode"] == "read-write"
        assert snapshot["databases"][0]["connection"]["status"] == "okay"
        assert snapshot["databases"][1]["connection"]["message"] == (
            "timed out after 0.2 s while connecting"
        )
    finally:
        release.set()


async def test_a_disabled_host_is_never_contacted(
    shared_pair: Pair, start_monitor: StartMonitor
) -> None:
    contacts = 0

    async def count(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal contacts
        contacts += 1
        writer.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    master, _ = shared_pair
    config = fast_config(
        [
            host_entry(master, "master"),
            {"host": "127.0.0.1", "port": port, "role": "replica", "disabled": True},
        ]
    )
    monitor, sink = await start_monitor(config)
    try:
        message = await first_state(sink)
        await wait_until(lambda: monitor.reading().as_dict()["databases"][0]["health"]["up"] == 5)
        assert contacts == 0
        entry = host_of(message, port)
        assert (entry["disabled"], entry["connection"]) == (True, None)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_disabled_master_means_read_only(
    shared_pair: Pair, start_monitor: StartMonitor
) -> None:
    master, replica = shared_pair
    config = fast_config(
        [host_entry(master, "master", disabled=True), host_entry(replica, "replica")]
    )
    _, sink = await start_monitor(config)
    message = await first_state(sink)
    assert (message["data"]["mode"], message["data"]["modeReason"]) == (
        "read-only",
        "the master is disabled",
    )


async def test_no_hosts_at_all_publishes_at_once(start_monitor: StartMonitor) -> None:
    _, sink = await start_monitor(fast_config([]))
    assert [m["data"]["mode"] for m in sink.messages] == ["read-only"]
