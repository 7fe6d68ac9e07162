"""Every secret read one way: the admin secret, the broker's and the databases' passwords alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.config import parse_config
from relay.config.secrets import (
    Secret,
    SecretSourceError,
    load_secret,
    read_secret,
    secret_from_env,
    secret_from_file,
)
from relay.errors import ConfigError, StartupError
from tests.config.test_config import ADMIN, CLIENT

SECRET = "pw-Secrets-4f1d-SECRET"
VARIABLE = "RELAY_TEST_SECRETS_VAR"


def _admin(field: str, value: str) -> str:
    """The admin secret, read at start-up as the node reads it."""
    config = parse_config({"servers": [CLIENT, ADMIN], "admin": {field: value}}, "test.json")
    secret = load_secret(config.admin)
    assert secret is not None
    return secret.bearer().removeprefix("Bearer ")


def _broker(field: str, value: str) -> str:
    """The broker's password, read while the config is validated."""
    section = {"url": "redis://h", field: value}
    config = parse_config({"servers": [CLIENT, ADMIN], "broker": section}, "test.json")
    assert config.broker is not None
    assert config.broker.password is not None
    return config.broker.password.get_secret_value()


def _cluster_status(field: str, value: str) -> str:
    """The databases' default password, read while the config is validated."""
    section = {"defaults": {field: value}}
    config = parse_config({"servers": [CLIENT, ADMIN], "cluster_status": section}, "test.json")
    assert config.cluster_status is not None
    assert config.cluster_status.defaults.secret is not None
    return config.cluster_status.defaults.secret.get_secret_value()


#: Each reader, and the file and variable fields as its problems name them.
SECTIONS: dict[str, tuple[Callable[[str, str], str], str, str]] = {
    "admin": (_admin, "secret_file", "secret_env"),
    "broker": (_broker, "password_file", "password_env"),
    "cluster_status": (_cluster_status, "pass_file", "pass_env"),
}
LOCATIONS = {"admin": "admin", "broker": "broker", "cluster_status": "cluster_status.defaults"}


def read(section: str, source: str, value: str) -> str:
    """The secret ``section`` reads from its ``source`` ("file" or "env") field."""
    reader, file_field, env_field = SECTIONS[section]
    return reader(file_field if source == "file" else env_field, value)


def problem(section: str, source: str, value: str) -> str:
    """The one problem reported for ``section``'s ``source`` field, without the file name."""
    with pytest.raises((ConfigError, StartupError)) as info:
        read(section, source, value)
    if isinstance(info.value, ConfigError):
        (line,) = info.value.problems
        return line.removeprefix("test.json: ")
    return str(info.value)


@pytest.fixture
def write(tmp_path: Path) -> Callable[[bytes], str]:
    """Write bytes to a fresh file; its path."""

    def write_bytes(content: bytes) -> str:
        path = tmp_path / f"secret-{len(list(tmp_path.iterdir()))}"
        path.write_bytes(content)
        return str(path)

    return write_bytes


@pytest.mark.parametrize("section", SECTIONS)
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"pw\n", "pw"),
        (b"pw\r\n", "pw"),
        (b"pw", "pw"),
        (b"  pw \t\n\n", "pw"),
        # Inside the secret, nothing is touched: not a space, not a lone "\r".
        (b"p w\rx\n", "p w\rx"),
        ("pässwörd\n".encode(), "pässwörd"),
    ],
)
def test_a_file_gives_its_content_without_surrounding_white_space(
    section: str, content: bytes, expected: str, write: Callable[[bytes], str]
) -> None:
    if section == "admin" and "\r" in expected:
        # The passwords keep it; no HTTP header can carry it (see the refusal test below).
        with pytest.raises(StartupError, match="control character"):
            read(section, "file", write(content))
        return
    assert read(section, "file", write(content)) == expected


@pytest.mark.parametrize("section", SECTIONS)
@pytest.mark.parametrize(("value", "expected"), [("pw", "pw"), (" pw\n", "pw"), ("p w", "p w")])
def test_a_variable_gives_its_value_without_surrounding_white_space(
    section: str, value: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VARIABLE, value)
    assert read(section, "env", VARIABLE) == expected


@pytest.mark.parametrize("section", SECTIONS)
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "the file {path} is empty; a secret cannot be empty"),
        (b" \r\n\n", "the file {path} is empty; a secret cannot be empty"),
        (b"\xffpw\n", "cannot read {path}: not UTF-8 text"),
    ],
)
def test_a_file_without_a_secret_is_refused_by_every_section(
    section: str, content: bytes, expected: str, write: Callable[[bytes], str]
) -> None:
    path = write(content)
    field = f"{LOCATIONS[section]}.{SECTIONS[section][1]}"
    assert problem(section, "file", path) == f"{field}: {expected.format(path=path)}"


@pytest.mark.parametrize("section", SECTIONS)
def test_a_file_that_cannot_be_read_is_named_with_the_reason(section: str, tmp_path: Path) -> None:
    field = f"{LOCATIONS[section]}.{SECTIONS[section][1]}"
    missing = tmp_path / "absent"
    assert problem(section, "file", str(missing)) == (
        f"{field}: cannot read {missing}: No such file or directory"
    )
    assert problem(section, "file", str(tmp_path)) == (
        f"{field}: cannot read {tmp_path}: Is a directory"
    )


@pytest.mark.parametrize("section", SECTIONS)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "the environment variable RELAY_TEST_SECRETS_VAR is not set"),
        ("", "the environment variable RELAY_TEST_SECRETS_VAR is empty; a secret cannot be empty"),
        (
            " \n",
            "the environment variable RELAY_TEST_SECRETS_VAR is empty; a secret cannot be empty",
        ),
    ],
)
def test_a_variable_without_a_secret_is_refused_by_every_section(
    section: str, value: str | None, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cluster-status section once took an empty pass_env as an empty password.
    if value is None:
        monkeypatch.delenv(VARIABLE, raising=False)
    else:
        monkeypatch.setenv(VARIABLE, value)
    field = f"{LOCATIONS[section]}.{SECTIONS[section][2]}"
    assert problem(section, "env", VARIABLE) == f"{field}: {expected}"


@pytest.mark.parametrize("section", SECTIONS)
def test_a_field_that_names_nothing_is_refused(section: str) -> None:
    location, file_field, env_field = LOCATIONS[section], *SECTIONS[section][1:]
    assert problem(section, "env", "") == f"{location}.{env_field}: names no environment variable"
    # In cluster_status too, where "" read as a path was the current directory.
    assert problem(section, "file", "") == (
        f"{location}.{file_field}: names no file; give the path of the file holding the secret"
    )


def test_the_cluster_status_password_from_an_empty_variable_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(VARIABLE, "")
    section = {"databases": [{"host": "db1", "role": "master", "pass_env": VARIABLE}]}
    with pytest.raises(ConfigError) as info:
        parse_config({"servers": [CLIENT, ADMIN], "cluster_status": section}, "test.json")
    assert info.value.problems == [
        "test.json: cluster_status.databases[0].pass_env: "
        f"the environment variable {VARIABLE} is empty; a secret cannot be empty"
    ]


@pytest.mark.parametrize("section", SECTIONS)
def test_no_error_shows_the_value(
    section: str, write: Callable[[bytes], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Values a reader refuses while holding them: bytes that are not UTF-8
    # (the decoder's own message would quote them), a file or a variable
    # named like the secret.
    texts = [
        problem(section, "file", write(SECRET.encode() + b"\xff\xfe" + SECRET.encode())),
        problem(section, "file", write(b"\xe9" + SECRET.encode())),
    ]
    monkeypatch.delenv(SECRET, raising=False)
    texts.append(problem(section, "env", "UNSET_" + VARIABLE))
    for text in texts:
        assert SECRET not in text
        assert "\\x" not in text


def test_reading_directly_names_the_field_apart() -> None:
    with pytest.raises(SecretSourceError) as info:
        secret_from_env("RELAY_TEST_SURELY_UNSET_VAR", "some.field")
    assert (info.value.field, info.value.problem) == (
        "some.field",
        "the environment variable RELAY_TEST_SURELY_UNSET_VAR is not set",
    )
    assert str(info.value) == (
        "some.field: the environment variable RELAY_TEST_SURELY_UNSET_VAR is not set"
    )


def test_read_secret_takes_one_source_or_none(write: Callable[[bytes], str]) -> None:
    path = write(SECRET.encode())
    fields: dict[str, Any] = {"file_field": "f", "env_field": "e"}
    assert read_secret(file=None, env=None, **fields) is None
    read = read_secret(file=path, env=None, **fields)
    assert read is not None
    assert read.get_secret_value() == SECRET
    assert SECRET not in repr(read) + str(read)
    with pytest.raises(SecretSourceError) as info:
        read_secret(file=path, env="X", **fields)
    assert str(info.value) == 'give "f" or "e", not both'
    assert secret_from_file(Path(path), "f").get_secret_value() == SECRET


def test_both_admin_sources_are_refused_when_the_config_loads() -> None:
    data = {"servers": [CLIENT, ADMIN], "admin": {"secret_file": "", "secret_env": ""}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.json")
    assert info.value.problems == ['test.json: admin: give "secret_file" or "secret_env", not both']


def test_the_admin_secret_never_shows_and_compares_by_value() -> None:
    secret = Secret(SECRET)
    assert SECRET not in repr(secret) + str(secret) + f"{secret}"
    assert secret.matches(SECRET)
    assert not secret.matches(SECRET + "x")
    assert not secret.matches("\udcff")  # a non-UTF-8 header byte, as aiohttp passes it on
    assert secret == Secret(SECRET)
    assert secret != Secret("other")
    assert secret.bearer() == f"Bearer {SECRET}"


@pytest.mark.parametrize("text", ["line-one\nline-two\n", "line-one\r\nline-two", "bell-\x07-x"])
def test_an_admin_secret_no_header_can_carry_is_refused_naming_the_field(
    tmp_path: Path, text: str
) -> None:
    """Accepted, it would have every POST refused and every peer request fail."""
    path = tmp_path / "secret"
    path.write_bytes(text.encode())
    config = parse_config(
        {"servers": [CLIENT, ADMIN], "admin": {"secret_file": str(path)}}, "test.json"
    )
    with pytest.raises(StartupError, match=r"^admin\.secret_file: .*control character") as caught:
        load_secret(config.admin)
    assert "line-" not in str(caught.value)
    assert "bell" not in str(caught.value)
