"""Browser frames and instance names, parsed without a server."""

from __future__ import annotations

import pytest

from relay.core.commands import (
    DEFAULT_REPLAY_AGE_MS,
    Ping,
    Replay,
    Subscribe,
    Unsubscribe,
    parse_command,
)
from relay.core.instances import instance_from_path
from relay.errors import CommandError


def test_the_four_commands() -> None:
    assert parse_command('{"command":"subscribe","data":["A","B"]}') == Subscribe(("A", "B"))
    assert parse_command('{"command":"unsubscribe","data":["A"]}') == Unsubscribe(("A",))
    assert parse_command('{"command":"replay","data":{"age":5000}}') == Replay(5000.0)
    assert parse_command('{"command":"ping"}') == Ping()


def test_replay_age_defaults_to_a_minute() -> None:
    assert parse_command('{"command":"replay","data":{}}') == Replay(DEFAULT_REPLAY_AGE_MS)
    assert parse_command('{"command":"replay"}') == Replay(DEFAULT_REPLAY_AGE_MS)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "not valid JSON"),
        ("[1,2]", "must be a JSON object"),
        ('{"command":"dance"}', 'unknown command "dance"'),
        ('{"data":[]}', "unknown command (none)"),
        ('{"command":"subscribe","data":"A"}', "list of strings"),
        ('{"command":"subscribe","data":["A",1]}', "list of strings"),
        ('{"command":"unsubscribe","data":{"A":1}}', "list of strings"),
        ('{"command":"replay","data":[60000]}', "an object"),
        ('{"command":"replay","data":{"age":"60000"}}', "number of milliseconds"),
        ('{"command":"replay","data":{"age":-1}}', "number of milliseconds"),
        ('{"command":"replay","data":{"age":true}}', "number of milliseconds"),
    ],
)
def test_unusable_frames_are_refused_with_a_reason(frame: str, reason: str) -> None:
    with pytest.raises(CommandError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_command(frame)


@pytest.mark.parametrize(
    ("command", "named"),
    [
        ("[" * 300 + "]" * 300, "(an array nested too deep to show)"),
        ('{"a":' * 300 + "1" + "}" * 300, "(an object nested too deep to show)"),
        ("[" * 200 + "]" * 200, "[" * 40),
    ],
)
def test_a_command_nested_deeper_than_json_can_be_written_is_named_plainly(
    command: str, named: str
) -> None:
    # orjson reads 1,024 levels but writes 254: the error must still be a CommandError.
    with pytest.raises(CommandError) as refused:
        parse_command('{"command":' + command + ',"data":[]}')
    assert str(refused.value) == f"unknown command {named}"


@pytest.mark.parametrize(
    ("path", "instance"),
    [
        ("/", "default"),
        ("", "default"),
        ("/~", "default"),
        ("/~/", "default"),
        ("/~acme/", "acme"),
        ("/~acme", "acme"),
        ("/notifications/~acme/", "acme"),
        ("/~acme/?x=1", "acme"),
        ("/~ac/me/", "acme"),
        ("/~acme~x/", "acme"),
        ("/~~x", "default"),
        ("/ws/", "default"),
    ],
)
def test_instance_comes_from_the_path_after_the_tilde(path: str, instance: str) -> None:
    assert instance_from_path(path) == instance
