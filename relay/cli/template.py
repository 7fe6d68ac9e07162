"""The template process of a ``--workers`` node: imports the worker's code once, forks workers.

Run by the supervisor as ``python -m relay.cli.template FD`` (FD: its end of
a socket pair) and never by hand. It imports what a worker runs, freezes it
out of the garbage collector, says ``ready``, then answers each request (a
JSON line: a worker's ``relay serve`` arguments and environment) with the
pid of a worker it forked, re-parented to the supervisor. It runs no event
loop and opens nothing, so a fork copies no loop, socket or thread. The
design, and why the worker is forked twice, is ``relay.workers.spawn``'s.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import select
import signal
import sys
import traceback
from typing import Any

import orjson

from relay.workers.spawn import TEMPLATE_NAME, TEMPLATE_READY, die_with_parent, set_process_name

#: What a worker imports, loaded here so every worker shares it. (The MySQL client of
#: the cluster-status module is left out: a worker loads it only where configured.)
WORKER_MODULES = (
    "relay.cli.main",
    "relay.node.runtime",
    "relay.node.node",
    "relay.node.parts",
    "relay.broker.link",
    "relay.broker.connect",
    "uvloop",
    "encodings.idna",  # the broker's and listeners' host names
)


def main(argv: list[str]) -> int:
    """Serve fork requests on the socket numbered ``argv[0]`` until it closes; 0."""
    control = int(argv[0])
    # Told apart from its workers, whose command line (the template's) it shares.
    set_process_name(TEMPLATE_NAME)
    # A Ctrl-C reaches the whole process group: the supervisor stops the node, and
    # the template ends when the supervisor closes its socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    supervisor = os.getppid()
    for name in WORKER_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    gc.collect()
    gc.freeze()
    _send(control, TEMPLATE_READY + b"\n")
    pending = b""
    while True:
        data = os.read(control, 65536)
        if not data:
            return 0
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            try:
                answer: dict[str, Any] = {"pid": _fork(orjson.loads(line), control, supervisor)}
            except (OSError, ValueError) as exc:
                answer = {"error": str(exc)}
            _send(control, orjson.dumps(answer) + b"\n")


def _send(control: int, data: bytes) -> None:
    while data:
        data = data[os.write(control, data) :]


def _fork(request: dict[str, Any], control: int, supervisor: int) -> int:
    """Fork the worker twice over, so that it is the supervisor's child; its pid."""
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:  # the middle process: fork the worker, say its pid, exit
        try:
            os.close(read)
            # A pidfd of its own, handed down: its pid alone could already be reused
            # (or getppid() name the supervisor) by the time the worker looks.
            me = os.pidfd_open(os.getpid())
            worker = os.fork()
            if worker == 0:
                _worker(request, me, supervisor)  # never returns
            _send(write, str(worker).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        data = b""
        while chunk := os.read(read, 64):
            data += chunk
    finally:
        os.close(read)
        # Once the middle process is reaped, the worker has been re-parented.
        os.waitpid(middle, 0)
    if not data:
        raise OSError("the worker could not be forked")
    return int(data)


def _worker(request: dict[str, Any], middle: int, supervisor: int) -> None:
    """In the forked worker: become what ``relay serve`` exec'd for a worker was; never returns.

    ``middle`` is a pidfd of the process that forked it, ``supervisor`` the
    supervisor's pid.
    """
    code: int = 1
    try:
        # Nothing the template held: the control socket, the pipe to the middle process.
        os.closerange(3, middle)
        os.closerange(middle + 1, os.sysconf("SC_OPEN_MAX"))
        # Readable once the middle process has exited, after its children were re-parented.
        poller = select.poll()
        poller.register(middle, select.POLLIN)
        poller.poll()
        os.close(middle)
        set_process_name(f"relay-worker-{request['index']}")
        die_with_parent()  # set now: at the middle process's exit it would have fired
        if os.getppid() != supervisor:
            os._exit(1)  # the supervisor died before the worker could follow it
        os.environ.update(request["env"])
        os.environ.pop("WATCHDOG_PID", None)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.argv = [sys.argv[0], *request["argv"]]
        from relay.cli.main import main as relay_main

        code = relay_main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":  # its PDEATHSIG was set before exec, and holds across it
    sys.exit(main(sys.argv[1:]))
