"""The ``relay`` command: serve, check a config, read a node's status, post a test message.

The arguments and what each command does; the process around a serving node
(signals, reloads, systemd) is ``relay.node.runtime``, the HTTP client of the
status and notify commands ``relay.cli.admin_client``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias

from relay import __version__
from relay.cli.preflight import check_config
from relay.cli.wording import counted
from relay.config import (
    DEFAULT_ADMIN_PORT,
    MAX_WORKERS,
    Config,
    default_config,
    load_config,
    workers_without_broker,
)
from relay.errors import ConfigError, RelayError, StartupError
from relay.process.logs import configure_logging
from relay.process.loop import run
from relay.process.open_files import raise_open_files_limit
from relay.process.pidfile import PidFile
from relay.workers.plan import WorkerRole

if TYPE_CHECKING:
    from relay.node.runtime import Handoff

# What only some commands need is imported in them: a --workers node's supervisor
# serves nothing, and the node, the network clients and the client commands'
# HTTP would cost it ~25 MiB it keeps for life (bench idle-node).

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
    """The ``relay`` command's arguments: one subcommand per thing an operator does."""
    parser = argparse.ArgumentParser(
        prog="relay", description="Aphlict-compatible notification relay for Phorge."
    )
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    _add_serve(commands)
    check_cmd = _add_command(
        commands,
        "check-config",
        _check_config,
        "validate a config file and what it points at (addresses, TLS, secret, log files)",
        config_required=True,
    )
    check_cmd.add_argument(
        "--connect",
        action="store_true",
        help="also connect to the broker and the cluster-status databases",
    )
    status_cmd = _add_client_command(
        commands, "status", _status, "print the status of a running node"
    )
    status_cmd.add_argument("-i", "--instance", default="", help="the instance to report on")
    status_cmd.add_argument(
        "--cluster",
        action="store_true",
        help="list every node of the cluster (broker mode, or a mesh's peers)",
    )
    _add_client_command(
        commands,
        "cluster-status",
        _cluster_status,
        "print a running node's view of the Phorge cluster",
    )
    _add_notify(commands)
    return parser


#: What ``ArgumentParser.add_subparsers`` returns (a class argparse does not export).
_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_command(
    commands: _Commands,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    help_text: str,
    *,
    config_required: bool = False,
) -> argparse.ArgumentParser:
    """A subcommand that runs ``handler``, with the ``--config`` every command takes."""
    command: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text
    )
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


def _add_client_command(
    commands: _Commands, name: str, handler: Callable[[argparse.Namespace], int], help_text: str
) -> argparse.ArgumentParser:
    """A subcommand that talks to a running node's admin port: which node, and ``--json``."""
    command = _add_command(commands, name, handler, help_text)
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


def _add_serve(commands: _Commands) -> None:
    """``relay serve`` and the options the supervisor gives the workers it spawns."""
    serve_cmd = _add_command(commands, "serve", _serve, "run a relay node in the foreground")
    serve_cmd.add_argument("--debug", action="store_true", help="log per-connection detail")
    serve_cmd.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="serve with N processes sharing the ports; they meet through the config's "
        "broker (default: the config's workers setting, else 1)",
    )
    serve_cmd.add_argument(
        "--handoff-socket",
        metavar="PATH",
        help="wait at this unix socket for a successor (`relay serve --take-over`) to hand "
        "every listener and browser connection to",
    )
    serve_cmd.add_argument(
        "--take-over",
        action="store_true",
        help="first take over the listeners and browsers of the relay waiting at "
        "--handoff-socket (an upgrade that disconnects no one)",
    )
    # Set by the supervisor of a multi-process node on the workers it spawns.
    serve_cmd.add_argument("--worker-dir", help=argparse.SUPPRESS)
    serve_cmd.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    serve_cmd.add_argument("--worker-restarts", type=int, default=0, help=argparse.SUPPRESS)


def _add_notify(commands: _Commands) -> None:
    """``relay notify``: the keys, instance, type and fields of the message to post."""
    notify_cmd = _add_client_command(
        commands, "notify", _notify, "post a notification to a running node"
    )
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


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config) if args.config else default_config()


def _check_config(args: argparse.Namespace) -> int:
    checked = check_config(args.config)
    for warning in checked.warnings:
        print(f"relay: warning: {warning}", file=sys.stderr)
    config = checked.config
    if args.connect:
        from relay.cli.reach import reach

        unreached = run(reach(config))
        if unreached:
            raise ConfigError([f"{args.config}: {problem}" for problem in unreached])
    parts = [
        counted(len(config.listeners("client")), "client listener"),
        counted(len(config.listeners("admin")), "admin listener"),
        counted(len(config.cluster), "cluster peer"),
    ]
    if config.workers > 1:
        parts.append(counted(config.workers, "worker"))
    reached = _reached(config) if args.connect else ""
    print(f"{args.config}: OK ({', '.join(parts)}){reached}")
    return 0


def _reached(config: Config) -> str:
    """What ``--connect`` reached, for the OK line."""
    databases = [] if config.cluster_status is None else config.cluster_status.databases
    reached = [f"the broker {config.broker.display_url}"] if config.broker is not None else []
    enabled = sum(not entry.disabled for entry in databases)
    if enabled:
        reached.append(counted(enabled, "database"))
    said = f"; reached {' and '.join(reached)}" if reached else "; nothing to connect to"
    if config.cluster:
        # Aphlict's cluster lists every node, this one too, which a check before
        # its start would find unreachable: a false alarm on every node.
        said += " (cluster peers are not contacted: the list may name this node, not serving yet)"
    return said


def _serve(args: argparse.Namespace) -> int:
    role = None
    warnings: list[str] = []
    if args.worker_dir:
        # The supervisor checked the file and holds the ports its workers share.
        role = WorkerRole.load(args.worker_dir, args.worker_index, args.worker_restarts)
        config = role.apply(_config(args))
    elif args.config:
        # What check-config reports, serve refuses, in the same words.
        checked = check_config(args.config, taking_over=args.take_over)
        config, warnings = checked.config, checked.warnings
    else:
        config = default_config()
    count = 1 if role is not None else _worker_count(args, config)
    # The supervisor holds the pidfile for the whole node; its workers do not.
    pidfile = PidFile(config.pidfile) if config.pidfile and role is None else None
    try:
        configure_logging(
            config.logs,
            debug=args.debug,
            log_format=config.log_format,
            worker=None if role is None else role.index,
        )
        if role is None:
            _startup_notes(config)
        for warning in warnings:
            log.warning("%s", warning)
        if role is None:  # workers inherit the supervisor's limit
            raise_open_files_limit(config.limits)
        handoff = _handoff(args, count, pidfile)
        if pidfile is not None and (handoff is None or not handoff.take_over):
            # A successor writes it once it has taken over (the old process holds it now).
            pidfile.acquire()
        if count > 1:
            from relay.node.supervise import supervise

            run(supervise(config, args.config, count, args.debug))
        else:
            from relay.node.runtime import serve_until_signalled

            run(serve_until_signalled(config, args.config, args.debug, role, handoff))
    except StartupError as exc:
        # Named as check-config names a problem: the file, then the field.
        log.error("%s%s", f"{args.config}: " if args.config else "", exc)
        return 1
    finally:
        if pidfile is not None:
            pidfile.release()
        # The process ends now and frees nothing more: spare the interpreter's last
        # collection over every object it loaded (0.1-0.16 s of CPU after "stopped"
        # was logged, measured with perf; 0.01 s with this).
        gc.freeze()
    return 0


def _handoff(args: argparse.Namespace, workers: int, pidfile: PidFile | None) -> Handoff | None:
    """The handoff options of ``relay serve`` (a worker's come from its supervisor), checked.

    ``pidfile`` (the node's) goes with them: it passes to the successor too.

    With several workers the supervisor gives each worker a socket of its own
    and replaces them in turn on SIGUSR2 (``relay.workers.roll``): a socket
    given (the systemd drop-in's) is not used, ``--take-over`` is refused.

    Raises:
        StartupError: ``--take-over`` without a socket, or with several workers.
    """
    if args.take_over and (args.handoff_socket is None or workers > 1):
        raise StartupError(
            "--take-over needs --handoff-socket PATH and one process (a --workers node "
            "replaces its workers itself on SIGUSR2 to its supervisor)"
        )
    if args.handoff_socket is None or workers > 1:
        return None
    from relay.node.runtime import Handoff

    return Handoff(args.handoff_socket, args.take_over, pidfile)


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


def _status(args: argparse.Namespace) -> int:
    from relay.cli.client_commands import status

    return status(args)


def _cluster_status(args: argparse.Namespace) -> int:
    from relay.cli.client_commands import cluster_status

    return cluster_status(args)


def _notify(args: argparse.Namespace) -> int:
    from relay.cli.client_commands import notify

    return notify(args)
