"""The ``relay`` command: serve, check a config, read a node's status, post a test message.

This is the only place that handles signals and picks the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Coroutine, Sequence
from typing import Any

import orjson

from relay import __version__
from relay.config import Config, ServerConfig, default_config, load_config
from relay.core.envelope import new_message
from relay.dbwatch.table import render_table
from relay.errors import ConfigError, RelayError, StartupError
from relay.node import Node, serve
from relay.ops.logs import configure_logging, reopen_log_files
from relay.ops.loop import run
from relay.ops.pidfile import PidFile
from relay.ops.systemd import Notifier
from relay.secret import load_secret

log = logging.getLogger("relay.cli")

#: Time allowed for ``relay status`` and ``relay notify`` to get an answer.
REQUEST_TIMEOUT = 5.0


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
            "--config",
            required=config_required,
            metavar="FILE",
            help="an Aphlict/relay JSON config file"
            + ("" if config_required else " (default: Aphlict's ports on loopback)"),
        )
        command.set_defaults(handler=handler)
        return command

    serve_cmd = add("serve", _serve, "run a relay node in the foreground")
    serve_cmd.add_argument("--debug", action="store_true", help="log per-connection detail")
    add("check-config", _check_config, "validate a config file", config_required=True)
    status_cmd = add("status", _status, "print the status of a running node")
    status_cmd.add_argument("--instance", default="", help="the instance to report on")
    status_cmd.add_argument(
        "--insecure", action="store_true", help="do not verify the admin port's TLS certificate"
    )
    table_cmd = add(
        "cluster-status", _cluster_status, "print a running node's view of the Phorge cluster"
    )
    table_cmd.add_argument("--json", action="store_true", help="print the JSON instead")
    table_cmd.add_argument(
        "--insecure", action="store_true", help="do not verify the admin port's TLS certificate"
    )
    notify_cmd = add("notify", _notify, "post a test notification to a running node")
    notify_cmd.add_argument("--key", required=True, help="the key (PHID) browsers subscribe to")
    notify_cmd.add_argument("--instance", default="", help="the instance to post to")
    notify_cmd.add_argument(
        "--insecure", action="store_true", help="do not verify the admin port's TLS certificate"
    )
    return parser


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config) if args.config else default_config()


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
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
        run(_serve_until_signalled(config, args.config, args.debug))
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    finally:
        if pidfile is not None:
            pidfile.release()
    return 0


async def _serve_until_signalled(config: Config, path: str | None, debug: bool) -> None:
    """Serve until SIGTERM or SIGINT; SIGHUP reloads ``path``. Keeps systemd informed."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    systemd = Notifier()
    background: set[asyncio.Task[None]] = set()

    def in_background(work: Coroutine[Any, Any, None]) -> None:
        task = loop.create_task(work)
        background.add(task)
        task.add_done_callback(background.discard)

    def request_stop(name: str) -> None:
        log.info("received %s, shutting down", name)
        systemd.stopping()
        for task in list(background):  # no reload or watchdog ping while stopping
            task.cancel()
        stop.set()

    def started(node: Node) -> None:
        # Reloads only once started: applying a config to a half-started node would race.
        loop.add_signal_handler(
            signal.SIGHUP, lambda: in_background(_reload(node, path, debug, systemd))
        )
        if systemd.watchdog_interval is not None:
            in_background(_watchdog(systemd, systemd.watchdog_interval))
        systemd.ready(_describe(node))

    # Stop signals first: one that comes while listeners start is honoured.
    loop.add_signal_handler(signal.SIGTERM, request_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, request_stop, "SIGINT")
    await serve(config, shutdown_trigger=stop.wait, on_ready=started)


async def _reload(node: Node, path: str | None, debug: bool, systemd: Notifier) -> None:
    """Reload the config file; a broken one is refused and the running one stays."""
    log.info("received SIGHUP, reloading %s", path or "(no config file: reopening logs)")
    if path is None:
        reopen_log_files()
        return
    systemd.reloading()
    try:
        config = load_config(path)
        notes = await node.apply(config)
        configure_logging(config.logs, debug=debug, log_format=config.log_format)
    except (ConfigError, StartupError) as exc:
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        log.error("reload refused, the running configuration stays: %s", "; ".join(problems))
    except Exception:
        log.exception("reload failed; the node keeps serving")
    else:
        for note in notes:
            log.warning("reload: %s", note)
        log.info("configuration reloaded from %s", path)
    finally:
        systemd.ready(_describe(node))


async def _watchdog(systemd: Notifier, interval: float) -> None:
    while True:
        systemd.watchdog()
        await asyncio.sleep(interval)


def _describe(node: Node) -> str:
    clients = ", ".join(f"{host}:{port}" for host, port in node.client_addresses)
    admins = ", ".join(f"{host}:{port}" for host, port in node.admin_addresses)
    return f"serving browsers on {clients}, admin on {admins}"


def _status(args: argparse.Namespace) -> int:
    query = urllib.parse.urlencode({"instance": args.instance}) if args.instance else ""
    status = _admin_request(_config(args), f"/status/?{query}", None, insecure=args.insecure)
    print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode())
    return 0


def _cluster_status(args: argparse.Namespace) -> int:
    snapshot = _admin_request(_config(args), "/cluster-status/", None, insecure=args.insecure)
    if args.json:
        print(orjson.dumps(snapshot, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_table(snapshot))
    return 0


def _notify(args: argparse.Namespace) -> int:
    message = new_message(args.key, "test")
    query = urllib.parse.urlencode({"instance": args.instance}) if args.instance else ""
    receipt = _admin_request(_config(args), f"/?{query}", message, insecure=args.insecure)
    print(
        f"posted {message['uniqueID']} to key {args.key}; "
        f"node fingerprint {receipt.get('fingerprint')}"
    )
    return 0


def _admin_request(config: Config, path: str, body: Any, *, insecure: bool) -> Any:
    """Call the first admin listener of ``config``; exit with a clear message on failure."""
    admin = config.listeners("admin")[0]
    url = _admin_url(admin) + path.rstrip("?")
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    secret = load_secret(config.admin)
    if secret is not None:
        request.add_header("Authorization", secret.bearer())
    context = None
    if admin.uses_tls:
        context = ssl.create_default_context()
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT, context=context) as reply:
            return orjson.loads(reply.read())
    except urllib.error.HTTPError as exc:
        raise RelayError(f"{url}: the node answered {exc.code}: {exc.read().decode()}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RelayError(f"{url}: cannot reach the node's admin port: {reason}") from None


def _admin_url(admin: ServerConfig) -> str:
    host = admin.bind_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if admin.uses_tls else 'http'}://{host}:{admin.port}"
