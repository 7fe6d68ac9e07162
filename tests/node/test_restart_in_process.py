"""A restart in one process: listeners on several addresses, a start that fails, a slow reader.

With :class:`~tests.harness.fdstore.FakeSystemd` as systemd, in this
process: a node stores itself (``store_for_restart``) and a second one
adopts what the fake kept (``adopt_passed``). ``dual.test`` resolves to
127.0.0.1 and ::1 (``getaddrinfo`` is replaced), so a listener there has
two sockets: the restart does not store it (as the handoff refuses it) and
binds it afresh, while the listener beside it, on one address, keeps its
socket. A start that fails after adopting stops the node: its browsers get
1001, not a connection dropped without a close frame. A browser that reads
nothing, behind bytes relay's transport holds, is stored with them, and the
next start writes them first: it reads on, every message once, in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import aiohttp
import orjson
import pytest

from relay.config import Config, parse_config
from relay.errors import StartupError
from relay.links.fdstore_wire import Passed, waiting_name
from relay.listeners.movable import MovableConnection
from relay.node.node import Node
from relay.node.restart import adopt_passed, store_for_restart
from relay.process.fdstore import FdStore
from tests.harness.fdstore import FakeSystemd
from tests.node.handoff_parts import Watcher, close_all, pooled_connection, post_over
from tests.node.slow_reader import AFTER, BEFORE, SEND_BUFFER, publish, slow_reader_behind
from tests.support import WAIT, eventually, free_ports, local_config, notification

#: A name that resolves to one IPv4 and one IPv6 address.
DUAL = "dual.test"


@pytest.fixture
async def dual(monkeypatch: pytest.MonkeyPatch) -> None:
    """``dual.test`` resolves to 127.0.0.1 and ::1 (asyncio's loop resolves through this)."""
    if not isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop):
        pytest.skip("uvloop resolves names in libuv, out of getaddrinfo's reach here")
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != DUAL:
            return real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port))),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", int(port), 0, 0)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _families(sockets: list[socket.socket]) -> list[int]:
    return sorted(sock.family for sock in sockets)


async def test_listeners_on_several_addresses_come_back_on_all_of_them(
    systemd: FakeSystemd, dual: None, caplog: pytest.LogCaptureFixture
) -> None:
    client_port, admin_port = free_ports(2)
    config = parse_config(
        local_config(
            servers=[
                {"type": "client", "port": client_port, "listen": DUAL},
                {"type": "admin", "port": admin_port, "listen": DUAL},
                {"type": "admin", "port": 0, "listen": "127.0.0.1"},
            ]
        )
    )
    store = FdStore.of({"NOTIFY_SOCKET": systemd.notify_socket, "FDSTORE": "100"})
    assert store is not None
    old = Node(config, connection_factory=MovableConnection)
    await old.start()
    kept_port = old.admin_addresses[1][1]  # port 0: a fresh bind would get another one
    watcher = await Watcher.open(client_port)
    with caplog.at_level(logging.WARNING, "relay.restart"):
        await store_for_restart(old, store)
    await old.stop()
    # Only the listener on one address is stored, under its own index.
    assert sorted(set(systemd.names())) == ["b", "relay-admin-1", "relay-state"]
    assert "the admin listener 0 listens on 2 addresses: not kept" in caplog.text
    assert "the client listener 0 listens on 2 addresses: not kept" in caplog.text
    passed = Passed.sort([(name, os.dup(fd)) for name, fd in systemd.stored])
    new = Node(config, connection_factory=MovableConnection)
    try:
        await adopt_passed(new, store, passed)
        assert new.adopted == 1
        # Every address of each listener is served again; the kept one on its own socket.
        listening = new.admin.listening()
        assert _families(new.client_listeners[0].listening_sockets()) == [
            socket.AF_INET,
            socket.AF_INET6,
        ]
        assert _families(listening[0]) == [socket.AF_INET, socket.AF_INET6]
        assert new.admin_addresses[1][1] == kept_port
        v6 = await Watcher.open(client_port, sock=socket.create_connection(("::1", client_port)))
        body = orjson.dumps(notification("K", unique_id="after"))
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://[::1]:{admin_port}/", data=body) as response,
        ):
            assert response.status == 200
        for browser in (watcher, v6):

            async def heard(browser: Watcher = browser) -> bool:
                return browser.ids == ["after"]

            await eventually(heard, "the post reaches the browser")
        assert watcher.ended is None  # kept across the restart
        await close_all([watcher, v6])
    finally:
        await new.stop()


async def _node_with_a_browser(systemd: FakeSystemd) -> tuple[Config, FdStore, Node, Watcher]:
    """A node (the default test config) with one browser, and a store kept by ``systemd``."""
    config = parse_config(local_config())
    store = FdStore.of({"NOTIFY_SOCKET": systemd.notify_socket, "FDSTORE": "100"})
    assert store is not None
    old = Node(config, connection_factory=MovableConnection)
    await old.start()
    return config, store, old, await Watcher.open(old.client_addresses[0][1])


async def test_a_start_that_fails_after_adopting_closes_the_browsers_with_1001(
    systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, store, old, watcher = await _node_with_a_browser(systemd)
    await store_for_restart(old, store)
    await old.stop()
    assert watcher.ended is None  # kept in the store
    passed = Passed.sort([(name, os.dup(fd)) for name, fd in systemd.stored])
    new = Node(config, connection_factory=MovableConnection)

    async def start_admin(*_args: object) -> None:
        raise StartupError("servers[1].ssl_cert: cannot read the certificate")

    # As an unreadable admin certificate would: once the browsers are adopted.
    monkeypatch.setattr(new, "start_admin", start_admin)
    with pytest.raises(StartupError):
        await adopt_passed(new, store, passed)
    async with asyncio.timeout(WAIT):
        await watcher.task
    assert watcher.ws.close_code == 1001  # going away: told, as at any stop
    assert new.client_listeners == []  # the node stopped


async def test_an_admin_connection_with_nothing_sent_yet_is_kept_and_answered_after(
    systemd: FakeSystemd, caplog: pytest.LogCaptureFixture
) -> None:
    config, store, old, watcher = await _node_with_a_browser(systemd)
    # An application server's connection, opened before the stop and used after the start.
    pooled = await pooled_connection(old.admin_addresses[0][1])
    with caplog.at_level(logging.INFO, "relay.restart"):
        await store_for_restart(old, store)
    await old.stop()
    assert "and 1 admin connections with no request yet" in caplog.text
    assert systemd.names().count(waiting_name(0)) == 1
    passed = Passed.sort([(name, os.dup(fd)) for name, fd in systemd.stored])
    new = Node(config, connection_factory=MovableConnection)
    try:
        with caplog.at_level(logging.INFO, "relay.restart"):
            await adopt_passed(new, store, passed)
        assert "1 admin connections with no request yet served" in caplog.text
        assert await asyncio.to_thread(post_over, pooled, "pooled") == 200
        await watcher.sync()
        assert watcher.ids == ["pooled"]
        assert watcher.ended is None  # kept across the restart
    finally:
        pooled.close()
        await close_all([watcher])
        await new.stop()


async def test_no_admin_connection_is_kept_where_the_store_has_no_room_for_it(
    systemd: FakeSystemd,
) -> None:
    config = parse_config(local_config())
    # One admin and one client listener and the state: nothing more fits.
    store = FdStore.of({"NOTIFY_SOCKET": systemd.notify_socket, "FDSTORE": "3"})
    assert store is not None
    old = Node(config, connection_factory=MovableConnection)
    await old.start()
    pooled = await pooled_connection(old.admin_addresses[0][1])
    with pooled:
        await store_for_restart(old, store)
        await old.stop()
        assert sorted(set(systemd.names())) == ["relay-admin-0", "relay-client-0", "relay-state"]
        pooled.settimeout(WAIT)
        assert await asyncio.to_thread(pooled.recv, 1) == b""  # closed, as an idle one


async def test_a_slow_reader_is_kept_with_what_it_is_owed(
    systemd: FakeSystemd, caplog: pytest.LogCaptureFixture
) -> None:
    limits = {"socket_send_buffer_bytes": SEND_BUFFER}
    config = parse_config(local_config(limits=limits))
    store = FdStore.of({"NOTIFY_SOCKET": systemd.notify_socket, "FDSTORE": "100"})
    assert store is not None
    old = Node(config, connection_factory=MovableConnection)
    await old.start()
    reader = await slow_reader_behind(old)
    with caplog.at_level(logging.INFO, "relay.restart"):
        await store_for_restart(old, store)
    await old.stop()
    assert "1 browser connections and 2 listeners kept" in caplog.text
    assert "(1 with " in caplog.text  # ... bytes this process had not sent yet
    passed = Passed.sort([(name, os.dup(fd)) for name, fd in systemd.stored])
    new = Node(config, connection_factory=MovableConnection)
    try:
        await adopt_passed(new, store, passed)
        assert new.adopted == 1
        publish(new, AFTER)
        assert await reader.read_until(AFTER[-1]) == BEFORE + AFTER
        assert reader.closed is None
    finally:
        reader.close()
        await new.stop()
