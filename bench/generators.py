"""The load-generator processes of the big scenarios (``100k``, ``handoff``, ``100k-roll``).

Browsers are shared among several generator processes, each opening its
share from loopback source addresses of its own (``bench.sources``), inside
the generators' CPU quota; a few probe browsers run in a process of their
own, outside it.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

from bench import sources
from bench.cpuquota import CpuQuotas
from bench.harness import Bench, Worker
from bench.scenarios import BROWSER_KEYS
from bench.server import RelayNode

#: Longest connecting every browser may take (the figure itself is ~2-3 minutes).
CONNECT_TIMEOUT = 600.0
#: Handshakes a generator has under way at once. Under its CPU quota (a tenth of
#: a core each), 256 (the default) left some waiting in the generator for more
#: than relay's 10 s handshake deadline on a slower machine: 2,102 of 100,000
#: were dropped as slow handshakes, though relay had time for them. Fewer at once
#: keep each one short; the generators' CPU sets the rate either way. (48 each
#: for 6 generators; as many in all for 12.)
CONNECT_CONCURRENCY = 24


class GeneratorSetup(Protocol):
    """What ``start_generators`` reads of a scenario's setup."""

    @property
    def browsers(self) -> int:
        """Browsers in all, probes included."""

    @property
    def probes(self) -> int:
        """Browsers in the probes' process, outside the generators' quota."""

    @property
    def generators(self) -> int:
        """Generator processes sharing the other browsers."""


def start_generators(
    bench: Bench,
    quotas: CpuQuotas,
    node: RelayNode,
    setup: GeneratorSetup,
    seen_size: int,
    *,
    keep_sent: bool = False,
    kernel_stamps: bool = False,
) -> list[Worker]:
    """One process per share of ``setup.browsers`` in the generators' quota, and the probes.

    The probes are the last browsers, from
    an address of their own, in a process outside the quota; the processes
    are not waited for. Each inherits the coordinator's open-files limit,
    raised to the hard limit. With ``keep_sent`` the browsers keep each
    message's post time (the handoff's before/during/after figures need it).
    With ``kernel_stamps`` each delivery's arrival on the browser's socket is
    tallied beside its read (``bench.kstamp``): a generator reading thousands
    of sockets on its share of 0.6 core reads the last ones seconds late, which
    is its own backlog, not relay's.
    """
    shares = sources.plan(setup.browsers - setup.probes, setup.generators)
    after = ipaddress.IPv4Address(shares[-1].sources[-1]) + 1
    probe = sources.Share(setup.browsers - setup.probes, setup.probes, (str(after),))
    started = []
    for share, group_name in [*((s, "browsers") for s in shares), (probe, "probe")]:
        if not share.count:
            continue
        group = {
            "name": group_name,
            "port": node.client_port,
            "count": share.count,
            "first_index": share.first,
            "keys": BROWSER_KEYS,
            "sources": list(share.sources),
        }
        spec = {
            "role": "browsers",
            "groups": [group],
            "tag": bench.tag,
            "seen_size": seen_size,
            "connect_timeout": CONNECT_TIMEOUT,
            "connect_concurrency": CONNECT_CONCURRENCY,
            "count_failures": True,
            "keep_sent": keep_sent,
            "kernel_stamps": kernel_stamps,
        }
        worker = Worker(spec)
        if group_name == "browsers":
            quotas.add("loadgen", worker.pid)
        started.append(worker)
    bench.workers.extend(started)
    return started
