"""The ``alerts`` section: a webhook URL without credentials, and a secret read one way."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from relay.config.alerts import AlertsConfig


def test_the_secret_comes_from_a_file_and_never_shows(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("hook-secret-42\n")
    config = AlertsConfig(url="https://hooks.example.com/relay", secret_file=str(path))
    assert config.secret is not None
    assert config.secret.get_secret_value() == "hook-secret-42"
    assert "hook-secret-42" not in repr(config)
    assert AlertsConfig(url="http://h/").secret is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://h/", "http:// or https://"),
        ("https://user:pw@h/", "credentials"),
        ("https:///path", "with a host"),
    ],
)
def test_a_url_it_cannot_use_is_refused(url: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        AlertsConfig(url=url)


def test_a_missing_secret_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="secret_file"):
        AlertsConfig(url="http://h/", secret_file=str(tmp_path / "nope"))
