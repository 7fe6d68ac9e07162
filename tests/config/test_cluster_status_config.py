"""The ``cluster_status`` config models: defaults, inheritance, secrets, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from relay.config import parse_config
from relay.config.cluster_status import ClusterStatusConfig
from relay.errors import ConfigError

SECRET = "pw-Config-9c1e-SECRET"
SOURCE = "aphlict.json"
SERVERS = [{"type": "client", "port": 0}, {"type": "admin", "port": 0}]


def load(section: dict[str, Any]) -> ClusterStatusConfig:
    """The section as relay loads it from a config file."""
    config = parse_config({"servers": SERVERS, "cluster_status": section}, SOURCE)
    assert config.cluster_status is not None
    return config.cluster_status


def problems(section: Any) -> list[str]:
    """The problems relay reports for the section, without the file name."""
    with pytest.raises(ConfigError) as info:
        parse_config({"servers": SERVERS, "cluster_status": section}, SOURCE)
    assert all(problem.startswith(f"{SOURCE}: ") for problem in info.value.problems)
    return [problem.removeprefix(f"{SOURCE}: ") for problem in info.value.problems]


def test_defaults() -> None:
    config = load({})
    assert config.databases == []
    assert config.namespace == "phabricator"
    assert config.database_interval_seconds == 3
    assert config.repository_interval_seconds == 5
    assert config.connect_timeout_seconds == 2
    assert config.query_timeout_seconds == 2
    assert config.write_interruption_seconds == 300
    assert config.keys.databases == "relay.cluster.databases"
    assert config.keys.repositories == "relay.cluster.repositories"
    assert config.instance == "default"
    assert config.repository_target() is None  # no master to default to


def test_a_phorge_cluster_databases_list_pastes_in() -> None:
    phorge_list = [
        {"host": "db001", "role": "master", "port": 3307, "user": "phab", "pass": SECRET},
        {"host": "db002", "role": "replica", "disabled": True, "persistent": True},
        {"host": "db003", "role": "replica", "partition": ["default"]},
    ]
    config = load({"databases": phorge_list, "defaults": {"user": "ops", "pass": "x"}})
    first, second, third = config.database_targets()
    assert (first.host, first.port, first.user) == ("db001", 3307, "phab")
    assert first.password.get_secret_value() == SECRET
    # Hosts without their own settings take the shared defaults.
    assert (second.port, second.user, second.password.get_secret_value()) == (3306, "ops", "x")
    assert third.label == "db003:3306"
    assert config.databases[2].partition == ["default"]


def test_phorge_defaults_when_nothing_is_given() -> None:
    config = load({"databases": [{"host": "db", "role": "master"}]})
    (target,) = config.database_targets()
    assert (target.port, target.user, target.password.get_secret_value()) == (3306, "root", "")


def test_repository_source_defaults_to_the_enabled_master() -> None:
    config = load(
        {
            "databases": [
                {"host": "old", "role": "master", "disabled": True},
                {"host": "new", "role": "master", "user": "phab", "pass": SECRET},
                {"host": "r1", "role": "replica"},
            ]
        }
    )
    target = config.repository_target()
    assert target is not None
    assert (target.host, target.user, target.password.get_secret_value()) == (
        "new",
        "phab",
        SECRET,
    )


def test_repository_source_may_name_another_host_and_override_credentials() -> None:
    config = load(
        {
            "databases": [{"host": "m", "role": "master", "user": "phab", "pass": "a"}],
            "defaults": {"port": 3310},
            "repository": {"host": "r1", "user": "reader", "pass": "b"},
        }
    )
    target = config.repository_target()
    assert target is not None
    assert (target.host, target.port, target.user) == ("r1", 3310, "reader")
    assert target.password.get_secret_value() == "b"
    inherited = load(
        {
            "databases": [{"host": "m", "role": "master", "user": "phab", "pass": "a"}],
            "repository": {"user": "reader"},
        }
    ).repository_target()
    assert inherited is not None
    assert (inherited.host, inherited.user, inherited.password.get_secret_value()) == (
        "m",
        "reader",
        "a",
    )


def test_repository_status_can_be_switched_off() -> None:
    config = load(
        {"databases": [{"host": "m", "role": "master"}], "repository": {"enabled": False}}
    )
    assert config.repository_target() is None


def test_password_from_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "db.pass"
    secret_file.write_text(SECRET + "\n")
    config = load({"databases": [{"host": "m", "role": "master", "pass_file": str(secret_file)}]})
    assert config.database_targets()[0].password.get_secret_value() == SECRET


def test_password_file_with_windows_line_end_and_none(tmp_path: Path) -> None:
    crlf = tmp_path / "crlf"
    crlf.write_bytes(b"abc\r\n")
    bare = tmp_path / "bare"
    bare.write_bytes(b"abc")
    for path in (crlf, bare):
        config = load({"defaults": {"pass_file": str(path)}})
        assert config.defaults.secret is not None
        assert config.defaults.secret.get_secret_value() == "abc"


def test_password_file_that_is_not_text(tmp_path: Path) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    (problem,) = problems({"defaults": {"pass_file": str(binary)}})
    assert problem == f"cluster_status.defaults.pass_file: cannot read {binary}: not UTF-8 text"


def test_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_TEST_DB_PASS", SECRET)
    config = load(
        {
            "defaults": {"pass_env": "RELAY_TEST_DB_PASS"},
            "databases": [{"host": "m", "role": "master"}],
        }
    )
    assert config.database_targets()[0].password.get_secret_value() == SECRET


def test_secrets_never_show_in_repr_str_or_dumps(tmp_path: Path) -> None:
    secret_file = tmp_path / "p"
    secret_file.write_text(SECRET)
    config = load(
        {
            "databases": [
                {"host": "m", "role": "master", "pass": SECRET},
                {"host": "r", "role": "replica", "pass_file": str(secret_file)},
            ],
            "defaults": {"pass": SECRET},
        }
    )
    texts = [
        repr(config),
        str(config),
        str(config.model_dump()),
        config.model_dump_json(),
        json.dumps(config.model_dump(mode="json")),
        repr(config.database_targets()),
        repr(config.repository_target()),
    ]
    for text in texts:
        assert SECRET not in text


def test_secrets_lists_every_password_once() -> None:
    config = load(
        {
            "databases": [
                {"host": "m", "role": "master", "pass": "aaaa"},
                {"host": "r", "role": "replica", "pass": "bbbbbb"},
            ],
            "defaults": {"pass": "aaaa"},
            "repository": {"pass": ""},
        }
    )
    assert config.secrets() == ["bbbbbb", "aaaa"]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"databases": [{"role": "master"}]},
            "cluster_status.databases[0].host: is required but missing",
        ),
        (
            {"databases": [{"host": "h", "role": "primary"}]},
            "cluster_status.databases[0].role: must be 'master' or 'replica', "
            "not the value given (not shown)",
        ),
        (
            {"databases": [{"host": "h", "role": "master", "port": 0}]},
            "cluster_status.databases[0].port: must be greater than or equal to 1",
        ),
        ({"bogus": 1}, "cluster_status.bogus: is not a known setting"),
        # Strict, like the rest of the file: no numbers or booleans in strings.
        (
            {"databases": [{"host": "h", "role": "master", "port": "3306"}]},
            "cluster_status.databases[0].port: must be a whole number, not a value (not shown)",
        ),
        (
            {"databases": [{"host": "h", "role": "master", "disabled": "true"}]},
            "cluster_status.databases[0].disabled: must be true or false, not a value (not shown)",
        ),
        (
            {"databases": [{"host": "h", "role": "master", "pass": "a", "pass_env": "X"}]},
            "cluster_status.databases[0]: give the password one way only, not pass and pass_env",
        ),
        (
            {"namespace": "phab; DROP"},
            "cluster_status.namespace: namespace must be 1 to 48 letters, digits or underscores "
            "(it is the prefix of Phorge's database names)",
        ),
        (
            {"database_interval_seconds": 0},
            "cluster_status.database_interval_seconds: must be greater than 0",
        ),
        (
            {"query_timeout_seconds": 600},
            "cluster_status.query_timeout_seconds: must be less than or equal to 60",
        ),
        (
            {"keys": {"databases": "k", "repositories": "k"}},
            "cluster_status.keys: keys.databases and keys.repositories must differ",
        ),
        (
            {
                "databases": [
                    {"host": "h", "role": "master"},
                    {"host": "h", "role": "replica", "port": 3306},
                ]
            },
            "cluster_status: databases[1] (h:3306) repeats databases[0]",
        ),
    ],
)
def test_errors_name_the_field_in_plain_words(section: dict[str, Any], expected: str) -> None:
    assert expected in problems(section)


def test_missing_password_file_and_environment_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    (problem,) = problems({"defaults": {"pass_file": str(missing)}})
    assert problem == (
        f"cluster_status.defaults.pass_file: cannot read {missing}: No such file or directory"
    )
    (problem,) = problems({"defaults": {"pass_env": "RELAY_TEST_SURELY_UNSET"}})
    assert problem == (
        "cluster_status.defaults.pass_env: "
        "the environment variable RELAY_TEST_SURELY_UNSET is not set"
    )


def test_validation_errors_never_echo_a_password() -> None:
    bad_sections: list[Any] = [
        {"databases": [{"host": "h", "role": "master", "pass": SECRET, "pass_env": "X"}]},
        {"databases": [{"host": "h", "role": "bogus", "pass": SECRET}]},
        {"databases": [{"host": "h", "role": "master", "pass": SECRET, "extra": SECRET}]},
        {"defaults": {"pass": [SECRET]}},
        {"databases": SECRET},
    ]
    for section in bad_sections:
        with pytest.raises(ConfigError) as info:
            parse_config({"servers": SERVERS, "cluster_status": section}, SOURCE)
        assert SECRET not in str(info.value)
        assert SECRET not in "\n".join(info.value.problems)


def test_models_are_frozen() -> None:
    config = load({})
    with pytest.raises(ValidationError):
        config.namespace = "other"
