"""What ``relay status``, ``relay cluster-status`` and ``relay notify`` do, as clients of a node.

Apart from ``main`` (the arguments) so that ``relay serve`` loads none of
it: a node's processes never need the HTTP client or the tables.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import orjson

from relay.cli.admin_client import AdminTarget, find_target
from relay.cli.cluster_table import render_table
from relay.cli.nodes_table import render_nodes
from relay.cli.status_table import render_status
from relay.config import load_config
from relay.core.envelope import new_message
from relay.errors import RelayError


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


def status(args: argparse.Namespace) -> int:
    """``relay status``: the node's status as a table or JSON (``--cluster``: its nodes)."""
    status = _target(args).request("/status/" + _instance_query(args.instance))
    if args.cluster:
        return _print_nodes(status, as_json=args.json)
    if args.json:
        _print_json(status)
    else:
        print(render_status(status), end="")
    return 0


def _print_nodes(status: dict[str, Any], *, as_json: bool) -> int:
    """``relay status --cluster``: the node's ``nodes`` section, as a table or JSON."""
    nodes = status.get("nodes")
    if not isinstance(nodes, dict):
        raise RelayError(
            'this node lists no cluster: presence needs broker mode (a "broker" section in '
            'its config) or a mesh (peers in "cluster"; not under --workers; README, '
            '"Presence"), or the node predates it'
        )
    if as_json:
        _print_json(nodes)
    else:
        print(render_nodes(nodes), end="")
    return 0


#: What to do when a node answers 404 to ``/cluster-status/``: it runs without the module.
_CLUSTER_STATUS_OFF = (
    'to turn it on, add a "cluster_status" section to the node\'s config file (README, '
    '"Cluster status") and reload the node (SIGHUP)'
)


def cluster_status(args: argparse.Namespace) -> int:
    """``relay cluster-status``: the node's view of the Phorge cluster, as a table or JSON."""
    snapshot = _target(args).request("/cluster-status/", hints={404: _CLUSTER_STATUS_OFF})
    if args.json:
        _print_json(snapshot)
    else:
        print(render_table(snapshot))
    return 0


def notify(args: argparse.Namespace) -> int:
    """``relay notify``: post a message to the node; print its uniqueID and the receipt."""
    keys: list[str] = args.key
    if not all(keys):
        # An empty key is an unset shell variable (`-k "$PHID"`), never a PHID:
        # say so rather than post to no one.
        raise RelayError("-k/--key: a key cannot be empty")
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
