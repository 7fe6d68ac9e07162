"""The ``relay`` command: serve, check a config, read a node's status, post a test message.

The arguments and what each command does; the process around a serving node
(signals, reloads, systemd) is ``relay.runtime``, the HTTP client of the
status and notify commands ``relay.ops.admin_client``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Any

import orjson

from relay import __version__
from relay.config import Config, default_config, load_config
from relay.core.envelope import new_message
from relay.dbwatch.table import render_table
from relay.errors import ConfigError, RelayError, StartupError
from relay.ops.admin_client import admin_request
from relay.ops.logs import configure_logging
from relay.ops.loop import run
from relay.ops.pidfile import PidFile
from relay.preflight import check_config
from relay.runtime import serve_until_signalled

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

    def add(
        name: str,
        handler: Any,
        help_text: str,
        *,
        config_required: bool = False,
        calls_admin: bool = False,
    ) -> Any:
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument(
            "--config",
            required=config_required,
            metavar="FILE",
            help="an Aphlict/relay JSON config file"
            + ("" if config_required else " (default: Aphlict's ports on loopback)"),
        )
        if calls_admin:
            command.add_argument(
                "--insecure",
                action="store_true",
                help="do not verify the admin port's TLS certificate",
            )
        command.set_defaults(handler=handler)
        return command

    serve_cmd = add("serve", _serve, "run a relay node in the foreground")
    serve_cmd.add_argument("--debug", action="store_true", help="log per-connection detail")
    add(
        "check-config",
        _check_config,
        "validate a config file and what it points at (addresses, TLS, secret, log files)",
        config_required=True,
    )
    status_cmd = add("status", _status, "print the status of a running node", calls_admin=True)
    status_cmd.add_argument("--instance", default="", help="the instance to report on")
    table_cmd = add(
        "cluster-status",
        _cluster_status,
        "print a running node's view of the Phorge cluster",
        calls_admin=True,
    )
    table_cmd.add_argument("--json", action="store_true", help="print the JSON instead")
    notify_cmd = add(
        "notify", _notify, "post a test notification to a running node", calls_admin=True
    )
    notify_cmd.add_argument("--key", required=True, help="the key (PHID) browsers subscribe to")
    notify_cmd.add_argument("--instance", default="", help="the instance to post to")
    return parser


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config) if args.config else default_config()


def _check_config(args: argparse.Namespace) -> int:
    config = check_config(args.config)
    clients, admins = len(config.listeners("client")), len(config.listeners("admin"))
    print(
        f"{args.config}: OK ({clients} client and {admins} admin listeners, "
        f"{len(config.cluster)} cluster peers)"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    config = _config(args)
    configure_logging(config.logs, debug=args.debug, log_format=config.log_format)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        log.warning(
            "relay is running as root; it needs no privileges (ports above 1024, files it "
            "owns), so run it as an unprivileged user"
        )
    if config.memory_hint is not None:
        log.info("memory.hint is an Aphlict (Node.js) setting; relay ignores it")
    pidfile = PidFile(config.pidfile) if config.pidfile else None
    if pidfile is not None:
        pidfile.acquire()
    try:
        run(serve_until_signalled(config, args.config, args.debug))
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    finally:
        if pidfile is not None:
            pidfile.release()
    return 0


def _status(args: argparse.Namespace) -> int:
    query = urllib.parse.urlencode({"instance": args.instance}) if args.instance else ""
    status = admin_request(_config(args), f"/status/?{query}", None, insecure=args.insecure)
    print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode())
    return 0


def _cluster_status(args: argparse.Namespace) -> int:
    snapshot = admin_request(_config(args), "/cluster-status/", None, insecure=args.insecure)
    if args.json:
        print(orjson.dumps(snapshot, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_table(snapshot))
    return 0


def _notify(args: argparse.Namespace) -> int:
    message = new_message(args.key, "test")
    query = urllib.parse.urlencode({"instance": args.instance}) if args.instance else ""
    receipt = admin_request(_config(args), f"/?{query}", message, insecure=args.insecure)
    print(
        f"posted {message['uniqueID']} to key {args.key}; "
        f"node fingerprint {receipt.get('fingerprint')}"
    )
    return 0
