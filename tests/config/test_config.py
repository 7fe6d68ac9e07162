"""Config loading: Aphlict's file format and every validation rule of the spec, one test each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.config import default_config, load_config, parse_config
from relay.errors import ConfigError

#: The file Aphlict ships (``aphlict.default.json``), as the spec describes it.
APHLICT_DEFAULT = {
    "servers": [
        {
            "type": "client",
            "port": 22280,
            "listen": "0.0.0.0",
            "ssl.key": None,
            "ssl.cert": None,
            "ssl.chain": None,
        },
        {
            "type": "admin",
            "port": 22281,
            "listen": "127.0.0.1",
            "ssl.key": None,
            "ssl.cert": None,
            "ssl.chain": None,
        },
    ],
    "logs": [{"path": "/var/log/aphlict.log"}],
    "pidfile": "/var/tmp/aphlict/pid/aphlict.pid",
}


def problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "test.json")
    assert all(line.startswith("test.json: ") for line in caught.value.problems)
    return caught.value.problems


def with_servers(*servers: dict[str, Any], **rest: Any) -> dict[str, Any]:
    return {"servers": list(servers), **rest}


CLIENT = {"type": "client", "port": 22280}
ADMIN = {"type": "admin", "port": 22281}


def test_aphlict_default_file_loads_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "aphlict.default.json"
    path.write_bytes(orjson.dumps(APHLICT_DEFAULT))
    config = load_config(path)
    client, admin = config.servers
    assert (client.type, client.port, client.bind_host) == ("client", 22280, "0.0.0.0")
    assert (admin.type, admin.port, admin.bind_host) == ("admin", 22281, "127.0.0.1")
    assert not client.uses_tls
    assert config.logs[0].path == "/var/log/aphlict.log"
    assert config.pidfile == "/var/tmp/aphlict/pid/aphlict.pid"
    assert config.history.max_messages == 4096
    assert config.history.max_age_seconds == 60


def test_example_config_in_the_repository_loads() -> None:
    config = load_config(Path(__file__).parents[2] / "aphlict.example.json")
    assert config.listeners("client")
    assert config.listeners("admin")
    # `make run` starts it: like relay without a file, it exposes nothing beyond the machine.
    assert [(s.type, s.port, s.bind_host) for s in config.servers] == [
        ("client", 22280, "127.0.0.1"),
        ("admin", 22281, "127.0.0.1"),
    ]


def test_listen_may_be_null_or_missing_and_then_binds_everywhere() -> None:
    config = parse_config(with_servers({**CLIENT, "listen": None}, ADMIN))
    assert [server.bind_host for server in config.servers] == ["0.0.0.0", "0.0.0.0"]


def test_without_a_file_only_loopback_listens() -> None:
    config = default_config()
    assert {server.bind_host for server in config.servers} == {"127.0.0.1"}
    assert sorted(server.port for server in config.servers) == [22280, 22281]


def test_models_are_frozen() -> None:
    config = default_config()
    with pytest.raises(ValueError, match="frozen"):
        config.servers[0].port = 1


def test_rule_two_servers_on_the_same_port() -> None:
    found = problems(with_servers(CLIENT, {**ADMIN, "port": 22280}))
    assert found == ["test.json: servers[1].port: port 22280 is already used by servers[0]"]


def test_rule_server_type_must_be_client_or_admin() -> None:
    found = problems(with_servers(CLIENT, ADMIN, {"type": "proxy", "port": 1}))
    assert found == ["test.json: servers[2].type: must be 'client' or 'admin', not \"proxy\""]


def test_rule_ssl_key_without_cert() -> None:
    found = problems(with_servers({**CLIENT, "ssl.key": "/k.pem"}, ADMIN))
    assert found == [
        'test.json: servers[0]: "ssl.key" is set but "ssl.cert" is not; TLS needs both'
    ]


def test_rule_ssl_cert_without_key() -> None:
    found = problems(with_servers(CLIENT, {**ADMIN, "ssl.cert": "/c.pem"}))
    assert found == [
        'test.json: servers[1]: "ssl.cert" is set but "ssl.key" is not; TLS needs both'
    ]


def test_rule_ssl_chain_without_key_and_cert() -> None:
    found = problems(with_servers({**CLIENT, "ssl.chain": "/chain.pem"}, ADMIN))
    assert found == ['test.json: servers[0]: "ssl.chain" is set without "ssl.key" and "ssl.cert"']


def test_rule_allowed_networks_names_the_entry() -> None:
    found = problems(
        with_servers(CLIENT, ADMIN, admin={"allowed_networks": ["10.0.0.0/8", "1.2.3.999"]})
    )
    assert found == ['test.json: admin.allowed_networks: entry 1, "1.2.3.999", is not a network']


def test_rule_no_servers_at_all() -> None:
    assert problems({"servers": []}) == [
        "test.json: servers: no servers are configured; relay needs a client and an admin"
    ]


def test_rule_servers_missing() -> None:
    assert problems({}) == ["test.json: servers: is required but missing"]


def test_rule_no_client_server() -> None:
    assert problems(with_servers(ADMIN)) == [
        'test.json: servers: no "client" server is configured; browsers need one to connect'
    ]


def test_rule_no_admin_server() -> None:
    assert problems(with_servers(CLIENT)) == [
        'test.json: servers: no "admin" server is configured; '
        "application servers need one to connect"
    ]


def test_rule_cluster_protocol_must_be_http_or_https() -> None:
    peer = {"host": "relay-2", "port": 22281, "protocol": "gopher"}
    assert problems(with_servers(CLIENT, ADMIN, cluster=[peer])) == [
        "test.json: cluster[0].protocol: must be 'http' or 'https', not \"gopher\""
    ]


def test_rule_same_peer_listed_twice() -> None:
    peers = [
        {"host": "relay-1", "port": 22281, "protocol": "http"},
        {"host": "relay-2", "port": 22281, "protocol": "http"},
        {"host": "relay-1", "port": 22281, "protocol": "https"},
    ]
    assert problems(with_servers(CLIENT, ADMIN, cluster=peers)) == [
        "test.json: cluster[2]: peer relay-1:22281 is listed twice (also at cluster[0])"
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (with_servers(CLIENT, ADMIN, colour="blue"), "test.json: colour: is not a known setting"),
        (
            with_servers({**CLIENT, "tls": True}, ADMIN),
            "test.json: servers[0].tls: is not a known setting",
        ),
        (
            with_servers(CLIENT, ADMIN, logs=[{"path": "/l", "level": 1}]),
            "test.json: logs[0].level: is not a known setting",
        ),
        (
            with_servers(
                CLIENT, ADMIN, cluster=[{"host": "h", "port": 1, "protocol": "http", "weight": 2}]
            ),
            "test.json: cluster[0].weight: is not a known setting",
        ),
    ],
)
def test_rule_unknown_keys_are_refused(data: dict[str, Any], expected: str) -> None:
    assert problems(data) == [expected]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            with_servers(CLIENT, ADMIN, histroy={}),
            'test.json: histroy: is not a known setting; did you mean "history"?',
        ),
        (
            with_servers(CLIENT, ADMIN, clusterstatus={}),
            'test.json: clusterstatus: is not a known setting; did you mean "cluster_status"?',
        ),
        (
            with_servers(CLIENT, {**ADMIN, "lisen": "::"}),
            'test.json: servers[1].lisen: is not a known setting; did you mean "listen"?',
        ),
        # The file's own spelling of a field, not the model's.
        (
            with_servers({**CLIENT, "sslkey": "/k"}, ADMIN),
            'test.json: servers[0].sslkey: is not a known setting; did you mean "ssl.key"?',
        ),
        (
            with_servers(CLIENT, ADMIN, cluster=[{"hots": "h", "port": 1, "protocol": "http"}]),
            'test.json: cluster[0].hots: is not a known setting; did you mean "host"?',
        ),
        (
            with_servers(CLIENT, ADMIN, history={"max_mesages": 5}),
            'test.json: history.max_mesages: is not a known setting; did you mean "max_messages"?',
        ),
        (
            with_servers(CLIENT, ADMIN, broker={"url": "redis://h", "pasword_env": "X"}),
            'test.json: broker.pasword_env: is not a known setting; did you mean "password_env"?',
        ),
        (
            with_servers(CLIENT, ADMIN, cluster_status={"defaults": {"pas": "x"}}),
            'test.json: cluster_status.defaults.pas: is not a known setting; did you mean "pass"?',
        ),
        (
            with_servers(
                CLIENT,
                ADMIN,
                cluster_status={"databases": [{"host": "h", "role": "master", "usr": "u"}]},
            ),
            "test.json: cluster_status.databases[0].usr: is not a known setting; "
            'did you mean "user"?',
        ),
    ],
)
def test_an_unknown_key_gets_the_known_one_it_resembles(
    data: dict[str, Any], expected: str
) -> None:
    assert expected in problems(data)


def test_wrong_types_name_the_field_and_what_was_given() -> None:
    found = problems(with_servers({**CLIENT, "port": "22280"}, {**ADMIN, "listen": 7}))
    assert found == [
        'test.json: servers[0].port: must be a whole number, not the string "22280"',
        "test.json: servers[1].listen: must be a string, not the number 7",
    ]


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        with_servers(
            {"type": "client", "port": 1, "extra": 1},
            cluster=[{"host": "h", "port": 1, "protocol": "ftp"}],
            pidfile=3,
        )
    )
    # In the order of the file, rules spanning entries among the others.
    assert found == [
        'test.json: servers: no "admin" server is configured; application servers need one '
        "to connect",
        "test.json: servers[0].extra: is not a known setting",
        "test.json: cluster[0].protocol: must be 'http' or 'https', not \"ftp\"",
        "test.json: pidfile: must be a string, not the number 3",
    ]


def test_a_duplicate_port_is_reported_along_with_a_broken_entry() -> None:
    found = problems(
        with_servers(
            CLIENT,
            {**ADMIN, "port": 22280},
            cluster=[{"host": "h", "port": 1, "protocol": "ftp"}],
        )
    )
    assert found == [
        "test.json: servers[1].port: port 22280 is already used by servers[0]",
        "test.json: cluster[0].protocol: must be 'http' or 'https', not \"ftp\"",
    ]


@pytest.mark.parametrize(
    "listen",
    ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "relay-1.example.com", "phorge.", ""],
)
def test_listen_takes_addresses_and_host_names(listen: str) -> None:
    config = parse_config(with_servers({**CLIENT, "listen": listen}, ADMIN))
    assert config.servers[0].listen == listen


@pytest.mark.parametrize(
    "listen", ["not an address", "300.1.2.3", "1.2.3", "http://relay", "-relay", "a..b", "x" * 64]
)
def test_listen_refuses_what_is_neither_address_nor_host_name(listen: str) -> None:
    found = problems(with_servers({**CLIENT, "listen": listen}, ADMIN))
    assert found == [
        f'test.json: servers[0].listen: "{listen}" is neither an IP address nor a host name'
    ]


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.json: cannot read the file"):
        load_config(tmp_path / "missing.json")


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "servers": [,]\n}\n')
    with pytest.raises(ConfigError, match=r"broken\.json: not valid JSON: .*line 2"):
        load_config(path)


def test_top_level_must_be_an_object() -> None:
    assert problems([1, 2]) == ["test.json: the file must hold a JSON object at the top level"]


def test_memory_hint_is_accepted() -> None:
    assert parse_config(with_servers(CLIENT, ADMIN, **{"memory.hint": 512})).memory_hint == 512


def test_relay_sections_are_validated_too() -> None:
    found = problems(with_servers(CLIENT, ADMIN, history={"max_age_seconds": 0}))
    assert found == ["test.json: history.max_age_seconds: must be greater than 0"]


def test_port_zero_may_repeat_so_the_os_picks_each() -> None:
    config = parse_config(with_servers({**CLIENT, "port": 0}, {**ADMIN, "port": 0}))
    assert [server.port for server in config.servers] == [0, 0]
