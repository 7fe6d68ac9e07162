"""The ``relay`` command: serve, check a config, read a node's status, post a test message.

The arguments and what each command does; the process around a serving node
(signals, reloads, systemd) is ``relay.node.runtime``, the HTTP client of the
status and notify commands ``relay.cli.admin_client``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from relay import __version__
from relay.cli.admin_client import AdminTarget, find_target
from relay.cli.cluster_table import render_table
from relay.cli.preflight import check_config
from relay.cli.status_table import render_status
from relay.config import (
    DEFAULT_ADMIN_PORT,
    MAX_WORKERS,
    Config,
    default_config,
    load_config,
    workers_without_broker,
)
from relay.core.envelope import new_message
from relay.errors import ConfigError, RelayError, StartupError
from relay.node.runtime import serve_until_signalled, supervise
from relay.process.logs import configure_logging
from relay.process.loop import run
from relay.process.open_files import raise_open_files_limit
from relay.process.pidfile import PidFile
from relay.workers.plan import WorkerRole

log = logging.getLogger("relay.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"relay: {problem}", file=sys.stderr)
        return 1
    except RelayError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description="Aphlict-compatible notification relay for Phorge."
    )
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def add(name: str, handler: Any, help_text: str, *, config_required: bool = False) -> Any:
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument(
            "-c",
            "--config",
            required=config_required,
            metavar="FILE",
            help="an Aphlict/relay JSON config file"
            + ("" if config_required else " (default: Aphlict's ports on loopback)"),
        )
        command.set_defaults(handler=handler)
        return command

    def add_client(name: str, handler: Any, help_text: str) -> Any:
        """A command that talks to a running node's admin port."""
        command = add(name, handler, help_text)
        where = command.add_argument_group(
            "which node",
            "by URL, by host and port, or the first admin listener of --config "
            f"(default: http://127.0.0.1:{DEFAULT_ADMIN_PORT})",
        )
        where.add_argument(
            "-u", "--url", metavar="URL", help="the admin port, e.g. http://relay1:22281"
        )
        where.add_argument("-H", "--host", metavar="HOST", help="the admin port's host")
        where.add_argument("-p", "--port", type=int, metavar="PORT", help="the admin port")
        where.add_argument(
            "--secret-file",
            metavar="FILE",
            help="a file holding the admin shared secret (default: the config's)",
        )
        where.add_argument(
            "--insecure", action="store_true", help="do not verify the admin port's TLS certificate"
        )
        command.add_argument("-j", "--json", action="store_true", help="print JSON, not a table")
        return command

    serve_cmd = add("serve", _serve, "run a relay node in the foreground")
    serve_cmd.add_argument("--debug", action="store_true", help="log per-connection detail")
    serve_cmd.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="serve with N processes sharing the ports; they meet through the config's "
        "broker (default: the config's workers setting, else 1)",
    )
    # Set by the supervisor of a multi-process node on the workers it spawns.
    serve_cmd.add_argument("--worker-dir", help=argparse.SUPPRESS)
    serve_cmd.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    serve_cmd.add_argument("--worker-restarts", type=int, default=0, help=argparse.SUPPRESS)
    add(
        "check-config",
        _check_config,
        "validate a config file and what it points at (addresses, TLS, secret, log files)",
        config_required=True,
    )
    status_cmd = add_client("status", _status, "print the status of a running node")
    status_cmd.add_argument("-i", "--instance", default="", help="the instance to report on")
    add_client(
        "cluster-status", _cluster_status, "print a running node's view of the Phorge cluster"
    )
    notify_cmd = add_client("notify", _notify, "post a notification to a running node")
    notify_cmd.add_argument(
        "-k",
        "--key",
        required=True,
        action="append",
        help="a key (PHID) browsers subscribe to; repeat to notify several",
    )
    notify_cmd.add_argument("-i", "--instance", default="", help="the instance to post to")
    notify_cmd.add_argument(
        "-t", "--type", default="test", help="the message's type (default: test)"
    )
    notify_cmd.add_argument(
        "-d",
        "--data",
        metavar="JSON",
        help="fields to add to the message, as Phorge's own messages carry theirs "
        "(a JSON object: text, @FILE to read it from a file, or - for stdin)",
    )
    return parser


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config) if args.config else default_config()


def _check_config(args: argparse.Namespace) -> int:
    config = check_config(args.config)
    clients, admins = len(config.listeners("client")), len(config.listeners("admin"))
    workers = f", {config.workers} workers" if config.workers > 1 else ""
    print(
        f"{args.config}: OK ({clients} client and {admins} admin listeners, "
        f"{len(config.cluster)} cluster peers{workers})"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    config = _config(args)
    role = None
    if args.worker_dir:
        role = WorkerRole.load(args.worker_dir, args.worker_index, args.worker_restarts)
        config = role.apply(config)
    count = 1 if role is not None else _worker_count(args, config)
    configure_logging(
        config.logs,
        debug=args.debug,
        log_format=config.log_format,
        worker=None if role is None else role.index,
    )
    if role is None:
        _startup_notes(config)
    # The supervisor holds the pidfile for the whole node; its workers do not.
    pidfile = PidFile(config.pidfile) if config.pidfile and role is None else None
    if pidfile is not None:
        pidfile.acquire()
    try:
        if role is None:  # workers inherit the supervisor's limit
            raise_open_files_limit(config.limits, source=args.config)
        if count > 1:
            run(supervise(config, args.config, count, args.debug))
        else:
            run(serve_until_signalled(config, args.config, args.debug, role))
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    finally:
        if pidfile is not None:
            pidfile.release()
    return 0


def _startup_notes(config: Config) -> None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        log.warning(
            "relay is running as root; it needs no privileges (ports above 1024, files it "
            "owns), so run it as an unprivileged user"
        )
    if config.memory_hint is not None:
        log.info("memory.hint is an Aphlict (Node.js) setting; relay ignores it")


def _worker_count(args: argparse.Namespace, config: Config) -> int:
    """How many worker processes to run: ``--workers``, else the config's ``workers``.

    Raises:
        RelayError: the count is not usable (more than one needs a broker).
    """
    if args.workers is None:
        return config.workers  # the config file's own rule already holds
    if not 1 <= args.workers <= MAX_WORKERS:
        raise RelayError(f"--workers {args.workers}: give a number from 1 to {MAX_WORKERS}")
    if args.workers > 1:
        if args.config is None:
            raise RelayError(
                f"--workers {args.workers}: workers meet through a broker; give a --config "
                'file with a "broker" section'
            )
        problem = workers_without_broker(config, args.workers)
        if problem is not None:
            raise RelayError(f"{args.config}: --workers {args.workers}: {problem}")
    return int(args.workers)


def _target(args: argparse.Namespace) -> AdminTarget:
    """The node a client command talks to, from its options."""
    return find_target(
        load_config(args.config) if args.config else None,
        url=args.url,
        host=args.host,
        port=args.port,
        secret_file=args.secret_file,
        insecure=args.insecure,
    )


def _instance_query(instance: str) -> str:
    return "?" + urllib.parse.urlencode({"instance": instance}) if instance else ""


def _print_json(value: Any) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _status(args: argparse.Namespace) -> int:
    status = _target(args).request("/status/" + _instance_query(args.instance))
    if args.json:
        _print_json(status)
    else:
        print(render_status(status), end="")
    return 0


def _cluster_status(args: argparse.Namespace) -> int:
    snapshot = _target(args).request("/cluster-status/")
    if args.json:
        _print_json(snapshot)
    else:
        print(render_table(snapshot))
    return 0


def _notify(args: argparse.Namespace) -> int:
    keys: list[str] = args.key
    message = new_message(keys[0], args.type)
    message["subscribers"] = keys
    if args.data is not None:
        fields = _read_data(args.data)
        if not isinstance(fields, dict):
            raise RelayError("--data: must be a JSON object (its fields are added to the message)")
        if "subscribers" in fields:
            raise RelayError("--data: give the subscribers with -k/--key, not in the data")
        message.update(fields)
    target = _target(args)
    receipt = target.request("/" + _instance_query(args.instance), message)
    if args.json:
        _print_json({"uniqueID": message["uniqueID"], **receipt})
    else:
        print(
            f"posted {message['uniqueID']} ({args.type}) to {', '.join(keys)}; "
            f"node fingerprint {receipt.get('fingerprint')}"
        )
    return 0


def _read_data(argument: str) -> Any:
    """``--data``: JSON text, ``@FILE`` or ``-`` (stdin), decoded."""
    if argument == "-":
        text, where = sys.stdin.read(), "--data (stdin)"
    elif argument.startswith("@"):
        try:
            text, where = Path(argument[1:]).read_text(), f"--data {argument}"
        except OSError as exc:
            raise RelayError(f"--data: cannot read {argument[1:]}: {exc.strerror}") from None
    else:
        text, where = argument, "--data"
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RelayError(
            f"{where}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
