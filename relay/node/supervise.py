"""The process around a --workers node's supervisor: stop signals, SIGHUP reloads, SIGUSR2.

Apart from ``relay.node.runtime`` (the process around a serving node) because
the supervisor serves nothing: it loads no listener, link or hub, none of
the libraries they use (aiohttp, redis-py, websockets, aiomysql, the
Prometheus client), ~25 MiB it would keep for life (bench idle-node).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from relay.config import Config, load_config
from relay.errors import ConfigError, StartupError, problem_lines
from relay.links.backoff import Backoff
from relay.process.fdstore import drop_passed
from relay.process.logs import configure_logging
from relay.process.systemd import Notifier
from relay.workers.supervisor import Supervisor

# The CLI's logger: operators' log filters know these lines under that name.
log = logging.getLogger("relay.cli")


async def supervise(config: Config, path: str, count: int, debug: bool) -> None:
    """Run ``count`` workers until SIGTERM or SIGINT; SIGHUP reloads them, SIGUSR2 replaces them."""
    # Before the ports are reserved: a listening socket systemd kept for a single-process
    # node holds its port, and the workers serve none of the browsers kept.
    drop_passed("under --workers")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    systemd = Notifier()
    supervisor = Supervisor(
        config, path, count=count, systemd=systemd, backoff=Backoff, debug=debug
    )

    def request_stop(name: str) -> None:
        log.info("received %s, stopping the workers", name)
        systemd.stopping()
        stop.set()

    def reload() -> None:
        if stop.is_set():  # systemd was told STOPPING=1; the workers are going
            log.info("received SIGHUP while stopping; no reload")
            return
        log.info("received SIGHUP, reloading %s in every worker", path)
        try:
            new = load_config(path)
            configure_logging(new.logs, debug=debug, log_format=new.log_format)
        except (ConfigError, StartupError) as exc:
            problems = "; ".join(problem_lines(exc, path))
            log.error("reload refused, the running configuration stays: %s", problems)
            return
        if new.workers != config.workers:
            log.warning("reload: workers changed: the number of workers changes with a restart")
        # The workers cannot see this one: each puts every server on the port the
        # supervisor holds for it (WorkerRole.apply), whatever the file says now.
        for index, (was, now) in enumerate(zip(config.servers, new.servers, strict=False)):
            if now.port != was.port:
                log.warning(
                    "reload: servers[%d].port changed: listeners keep their old ports "
                    "until a restart",
                    index,
                )
        supervisor.reload()

    loop.add_signal_handler(signal.SIGTERM, request_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, request_stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, reload)
    # Each worker in turn to the code installed now (relay.workers.roll).
    loop.add_signal_handler(signal.SIGUSR2, supervisor.upgrade)
    await supervisor.run(stop)
