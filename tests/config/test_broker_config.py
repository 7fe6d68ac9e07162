"""The ``broker`` config section: URLs, TLS settings, the password's sources, and its errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS

from relay.config import parse_config
from relay.config.broker import URL_OPTIONS
from tests.config.test_config import ADMIN, CLIENT, problems, with_servers


def broker(**settings: Any) -> dict[str, Any]:
    return with_servers(CLIENT, ADMIN, broker=settings)


def test_broker_mode_is_off_without_the_section() -> None:
    assert parse_config(with_servers(CLIENT, ADMIN)).broker is None


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://redis.example:6380", "unix:///run/r.sock?db=2"]
)
def test_usable_urls_load(url: str) -> None:
    config = parse_config(broker(url=url))
    assert config.broker is not None
    assert config.broker.url == url
    assert config.broker.password is None


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"url": "http://h:6379"}, "broker.url: must start with redis://, rediss:// or unix://"),
        ({"url": "redis://:pw@h:6379/0"}, "broker.url: must not carry a password"),
        ({"url": "unix:///s.sock?password=pw"}, "broker.url: must not carry a password"),
        ({"url": "redis://h/0?Password=pw"}, "broker.url: must not carry a password"),
        ({"url": "redis://h:6379/0\u0000"}, "broker.url: must not hold spaces or control"),
        ({"url": "redis://h:6379/0 "}, "broker.url: must not hold spaces or control"),
        (
            {"url": "redis://h/0?foo=bar"},
            'broker.url: has the query option "foo", which redis-py does not read',
        ),
        ({"url": "redis://h/zero"}, "broker.url: the database must be a number"),
        ({"url": "redis://h:70000"}, "broker.url: is not a valid URL"),
        ({"url": "redis:///0"}, "broker.url: names no host"),
        ({"url": "redis://h", "ca_file": "/ca.pem"}, 'broker: "ca_file" and "tls_verify" apply'),
        ({"url": "redis://h", "prefix": "a*"}, "broker.prefix: must be 1-64 letters"),
        ({"url": "redis://h", "queue_size": 0}, "broker.queue_size: must be greater than"),
        ({"url": "redis://h", "sentinel": 1}, "broker.sentinel: is not a known setting"),
        (
            {"url": "redis://master:6379/0", "sentinels": [{"host": "s1"}]},
            'with "sentinels", "url" names the master as Sentinel knows it, with no port',
        ),
        ({"url": "redis://m", "sentinels": [{"host": "s1", "port": 0}]}, "sentinels[0].port"),
        (
            {"url": "redis://h", "ping_interval_seconds": 5, "stale_seconds": 5},
            '"stale_seconds" must be longer than "ping_interval_seconds"',
        ),
        (
            {"url": "redis://h", "password_file": "/p", "password_env": "P"},
            'give "password_file" or "password_env", not both',
        ),
    ],
)
def test_each_mistake_names_the_field(settings: dict[str, Any], expected: str) -> None:
    assert any(expected in problem for problem in problems(broker(**settings))), problems(
        broker(**settings)
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis//127.0.0.1:6399",
            'must start with redis://, rediss:// or unix://, not "redis//"; '
            'did you mean "redis://"?',
        ),
        (
            "rediss/h:6380",
            'must start with redis://, rediss:// or unix://, not "rediss/"; '
            'did you mean "rediss://"?',
        ),
        (
            "reddis://h",
            'must start with redis://, rediss:// or unix://, not "reddis://"; '
            'did you mean "redis://"?',
        ),
        ("http://h:6379", 'must start with redis://, rediss:// or unix://, not "http://"'),
        (
            "127.0.0.1:6379",
            "must start with redis://, rediss:// or unix://, and has no scheme; "
            "write redis://host:port/0 for a Redis at host:port",
        ),
        (
            "localhost:6379",
            "must start with redis://, rediss:// or unix://, and has no scheme; "
            "write redis://host:port/0 for a Redis at host:port",
        ),
    ],
)
def test_a_url_that_starts_wrong_says_what_was_found_and_meant(url: str, expected: str) -> None:
    assert problems(broker(url=url)) == [f"test.json: broker.url: {expected}"]


def test_a_url_that_starts_wrong_quotes_only_its_start() -> None:
    (problem,) = problems(broker(url="redis//:hunter2@h:6379/0"))
    assert "hunter2" not in problem
    assert problem.endswith('not "redis//"; did you mean "redis://"?')


def test_the_password_comes_from_a_file_and_never_shows(tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text("hunter2-redis\n")
    config = parse_config(broker(url="rediss://h", password_file=str(secret)))
    assert config.broker is not None
    assert config.broker.password is not None
    assert config.broker.password.get_secret_value() == "hunter2-redis"
    assert "hunter2" not in repr(config) + str(config.broker) + str(config.model_dump())


def test_the_password_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_REDIS_PASSWORD", "from-env")
    config = parse_config(broker(url="redis://h", password_env="RELAY_REDIS_PASSWORD"))
    assert config.broker is not None
    assert config.broker.password is not None
    assert config.broker.password.get_secret_value() == "from-env"


def test_a_missing_password_source_names_the_file_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope"
    [problem] = problems(broker(url="redis://h", password_file=str(missing)))
    assert problem == (
        f"test.json: broker.password_file: cannot read {missing}: No such file or directory"
    )
    monkeypatch.delenv("RELAY_NO_SUCH_VAR", raising=False)
    [problem] = problems(broker(url="redis://h", password_env="RELAY_NO_SUCH_VAR"))
    assert problem == (
        "test.json: broker.password_env: the environment variable RELAY_NO_SUCH_VAR is not set"
    )


def test_sentinels_name_the_master_in_the_url() -> None:
    config = parse_config(
        broker(url="redis://myMaster/2", sentinels=[{"host": "s1"}, {"host": "s2", "port": 5000}])
    )
    assert config.broker is not None
    assert config.broker.master_name == "myMaster"
    assert config.broker.display_url == (
        "redis://myMaster/2 (master from sentinels s1:26379,s2:5000)"
    )


def test_the_url_options_are_those_redis_py_reads() -> None:
    """An upgrade of redis-py that reads other options shows here."""
    assert sorted(URL_OPTIONS) == sorted(URL_QUERY_ARGUMENT_PARSERS)


def test_a_url_given_where_the_section_belongs_is_not_echoed() -> None:
    [problem] = problems(with_servers(CLIENT, ADMIN, broker="redis://:S3cretPW@h:6379/0"))
    assert problem.startswith("test.json: broker: must be an object")
    assert "S3cretPW" not in problem
