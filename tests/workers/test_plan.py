"""The supervisor's plan and its hold on the node's ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from relay.config import parse_config
from relay.errors import StartupError
from relay.workers.plan import NodePlan, WorkerRole
from relay.workers.ports import PortReservation
from tests.support import local_config


def test_a_worker_reads_the_plan_and_takes_the_nodes_ports(tmp_path: Path) -> None:
    NodePlan(count=2, ports=(4100, 4101), started=12.5).write(tmp_path)
    role = WorkerRole.load(str(tmp_path), 1, 3)
    assert role.plan == NodePlan(2, (4100, 4101), 12.5)
    assert role.generation == 3
    config = role.apply(parse_config(local_config()))
    assert [server.port for server in config.servers] == [4100, 4101]
    assert role.socket_path(0) == tmp_path / "worker-0.sock"


def test_a_worker_without_a_plan_or_outside_it_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="cannot read the supervisor's plan"):
        WorkerRole.load(str(tmp_path), 0, 0)
    NodePlan(count=2, ports=(4100, 4101), started=0.0).write(tmp_path)
    with pytest.raises(StartupError, match="index 2 is outside"):
        WorkerRole.load(str(tmp_path), 2, 0)
    role = WorkerRole.load(str(tmp_path), 0, 0)
    three = local_config()
    three["servers"].append({"type": "client", "port": 0, "listen": "127.0.0.1"})
    with pytest.raises(StartupError, match="number of servers changed"):
        role.apply(parse_config(three))


def listen_shared(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    sock.setblocking(False)
    return sock


def test_reserved_ports_are_shared_by_workers_and_get_no_connections_themselves() -> None:
    reservation = PortReservation()
    client, admin = reservation.reserve(parse_config(local_config()).servers)
    try:
        assert client != admin
        assert 0 not in (client, admin)
        # Someone who does not share (no SO_REUSEPORT) cannot take the port.
        with socket.socket() as intruder, pytest.raises(OSError, match="in use"):
            intruder.bind(("127.0.0.1", client))
        worker = listen_shared(client)
        with worker:
            # Every connection reaches the listening worker: the reservation only holds.
            connections = [socket.create_connection(("127.0.0.1", client)) for _ in range(8)]
            worker.setblocking(True)
            worker.settimeout(5)
            accepted = [worker.accept()[0] for _ in connections]
            for sock in connections + accepted:
                sock.close()
    finally:
        reservation.release()


def test_a_port_someone_listens_on_is_refused_in_check_configs_words() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        taken = other.getsockname()[1]
        config = local_config()
        config["servers"][1]["port"] = taken
        with pytest.raises(StartupError) as caught:
            PortReservation().reserve(parse_config(config).servers)
    assert str(caught.value) == (
        f"servers[1].port: cannot listen for admin connections on 127.0.0.1:{taken}: "
        "Address already in use (another process holds the port)"
    )
