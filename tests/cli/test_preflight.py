"""What serve would refuse, checked in-process on files a test writes."""

from __future__ import annotations

import socket
from pathlib import Path

import orjson
import pytest

from relay.cli.preflight import check_config, preflight
from relay.errors import ConfigError
from tests.support import local_config


def test_a_sound_file_passes_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "relay.json"
    config = local_config(
        logs=[{"path": str(tmp_path / "new" / "dir" / "relay.log")}],
        pidfile=str(tmp_path / "run" / "relay.pid"),
    )
    config["servers"][0]["listen"] = "localhost"  # a name, resolved from /etc/hosts
    path.write_bytes(orjson.dumps(config))
    assert check_config(path).config.servers[0].listen == "localhost"
    assert not (tmp_path / "new").exists()  # checked, not created


@pytest.mark.parametrize(
    "ssl",
    [
        {"ssl.key": "", "ssl.cert": "", "ssl.chain": ""},
        {"ssl.key": None, "ssl.cert": ""},  # crashed the check with an AssertionError
        {"ssl.key": "", "ssl.cert": None, "ssl.chain": None},
    ],
)
def test_empty_ssl_paths_mean_no_tls_as_with_aphlict(tmp_path: Path, ssl: dict[str, str]) -> None:
    """Aphlict tests these for truth, so a config of its with "" serves plain HTTP there."""
    config = local_config()
    for server in config["servers"]:
        server.update(ssl)
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(config))
    servers = check_config(path).config.servers
    assert [server.uses_tls for server in servers] == [False, False]


def test_a_file_that_is_not_an_object_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "relay.json"
    path.write_bytes(b"[1, 2]")
    with pytest.raises(ConfigError) as caught:
        check_config(path)
    assert caught.value.problems == [f"{path}: the file must hold a JSON object at the top level"]


def test_each_entry_is_judged_on_its_own(tmp_path: Path) -> None:
    problems = preflight(
        {
            "servers": [
                {"type": "client", "port": "not a number", "ssl.key": "/k", "ssl.cert": "/c"},
                {"type": "admin", "port": 1, "ssl.key": "/nope.key", "ssl.cert": "/nope.crt"},
            ],
            "pidfile": "",
            "admin": {"secret_env": "RELAY_TEST_UNSET_SECRET"},
            "peering": "not an object",
        }
    )
    # The first server is the models' to report; an empty pidfile means none.
    assert problems == [
        "servers[1]: cannot load TLS files (ssl.cert /nope.crt, ssl.key /nope.key): "
        "No such file or directory",
        "admin.secret_env: the environment variable RELAY_TEST_UNSET_SECRET is not set",
    ]


def test_a_log_behind_a_dangling_link_is_checked_where_it_leads_and_nothing_changes(
    tmp_path: Path,
) -> None:
    """check-config changes nothing on disk: the link stays, no file is left behind."""
    (tmp_path / "target").mkdir()
    link = tmp_path / "relay.log"
    link.symlink_to(tmp_path / "target" / "relay.log")
    assert preflight({"logs": [{"path": str(link)}]}) == []
    assert link.is_symlink()
    assert not (tmp_path / "target" / "relay.log").exists()
    # Where it leads cannot be written: the configured path is named.
    link.unlink()
    link.symlink_to(tmp_path / "missing-file-parent" / "x" / "relay.log")
    (tmp_path / "missing-file-parent").write_text("a file, not a directory")
    [problem] = preflight({"logs": [{"path": str(link)}]})
    assert problem.startswith(f"logs[0].path: cannot open the log file {link}: ")


@pytest.mark.parametrize("device", ["/dev/stdout", "/dev/null"])
def test_a_log_on_a_device_is_taken_as_serve_takes_it(device: str) -> None:
    assert preflight({"logs": [{"path": device}]}) == []


def test_an_existing_log_file_must_be_a_writable_file(tmp_path: Path) -> None:
    (tmp_path / "a-directory.log").mkdir()
    problems = preflight({"logs": [{"path": str(tmp_path / "a-directory.log")}]})
    assert problems == [
        f"logs[0].path: cannot open the log file {tmp_path}/a-directory.log: not a writable file"
    ]


def test_a_port_held_is_no_warning_for_the_process_taking_it_over(tmp_path: Path) -> None:
    """A successor (serve --take-over) gets its ports from the process holding them."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        config = local_config()
        config["servers"][1]["port"] = holder.getsockname()[1]
        path = tmp_path / "relay.json"
        path.write_bytes(orjson.dumps(config))
        [held] = check_config(path).warnings
        assert "Address already in use" in held
        assert check_config(path, taking_over=True).warnings == []
