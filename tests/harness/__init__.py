"""Scenario tests on clusters of real relay processes: start them, reach them, always stop them.

Ask for the ``relays`` fixture (tests/conftest.py). It yields a :class:`Relays`
that makes clusters, and at the test's end stops every node it made (SIGTERM,
then SIGKILL of the process group), whether the test passed or not. When a test
fails, the end of each node's log is added to its report ("relay logs").

Mesh mode: every node lists every node, itself included, as Aphlict's
``cluster`` does::

    async def test_mesh(relays: Relays, session: aiohttp.ClientSession) -> None:
        cluster = await relays.mesh(3).start()
        browsers = await cluster.browsers("PHID-KEY")   # one per node, subscribed
        admins = cluster.admins(session)                # one per node
        await admins[0].post(notification("PHID-KEY", unique_id="m-1"))

Broker mode: nodes meet in Redis (the ``redis_server`` fixture), each
optionally a supervisor with worker processes::

    cluster = await relays.broker(3, redis_server.url, workers=2).start()
    cluster = await relays.broker(2, {"url": redis_server.url, "stale_seconds": 1.5}).start()

Other top-level config sections go as keywords: ``relays.mesh(3,
peering={"queue_size": 5})``; peers beyond the cluster (an Aphlict double)
as ``peers=[peer_entry(port)]``; ``args=("--debug",)`` and ``env={...}`` go to
every node's ``relay serve``. ``host="::1"`` puts the listeners, the peer
lists and the URLs on IPv6.

Between ``mesh()``/``broker()`` and ``start()`` each node's config is a plain
dict, :attr:`RelayNode.config` (``servers[0]`` the client listener,
``servers[1]`` the admin one): change what a scenario needs::

    cluster = relays.mesh(3)
    cluster[0].config["cluster"][2]["port"] = relays.unused_port()  # a dead link
    await cluster.start()

Ports: every listener is on port 0 and the node's own pick is read back,
except where a config must name a port before the node starts: a mesh's admin
ports. Those the OS picks too, and the harness holds them (bound, never
listening) until the node has bound them, so no other process can take one in
between. ``relays.unused_port()`` is a port that stays held, refusing
connections, until the test ends.

Readiness: each node gets a systemd notify socket of its own; ``start()``
returns once every node has sent ``READY=1`` (its listeners are bound; with
workers, every worker serves), with a bound of ``START_WAIT`` seconds per node.
A node that exits or does not get ready fails the start with its log. Ports come
from the ``STATUS=`` line of that notification. Peer links come up later: wait
for them on the nodes' ``/status/`` with ``tests.support.eventually``.

Handles: ``cluster[i]`` is a :class:`RelayNode` with ``client_url``,
``admin_url``, ``client_port``, ``admin_port``, ``pid``, ``log_path`` and
``log`` (the text so far); ``admin(session)``, ``browser(*keys)``;
``signal(signum)``, ``kill()`` (``kill -9``, workers included), ``stop()``
(SIGTERM), ``wait()`` (the exit status); ``wait_for_log(pattern)``,
``next_notice(predicate)`` (sd_notify datagrams: ``RELOADING=1``...) and
``children()`` (worker pids). ``await cluster.start(i)`` starts node ``i``
again after a kill or stop, on the ports it had; each start logs to a file of
its own (``log_paths``).

Blocking code (a synchronous test) calls ``start_blocking()``; ``start()`` runs
it in a thread so that servers in the test's own event loop (a peer double)
keep answering while nodes start. ``run_serve(*args)`` runs ``relay serve`` to
its end, for a node that must refuse to start.
"""

from tests.harness.cluster import Cluster, Relays, peer_entry
from tests.harness.node import START_WAIT, RelayNode, children_of, run_serve

__all__ = [
    "START_WAIT",
    "Cluster",
    "RelayNode",
    "Relays",
    "children_of",
    "peer_entry",
    "run_serve",
]
