"""A reload that renews the peer links (new peering settings): each peer keeps its queue and state.

The README promises that on a reload unchanged peers keep their queue and
state; new peering settings make new links, which must take over what the old
ones held rather than start empty and ``unknown``.
"""

from __future__ import annotations

import signal
from typing import Any

import aiohttp
import orjson
import pytest

from tests.harness import Relays
from tests.support import eventually, notification

pytestmark = pytest.mark.slow


async def test_new_peering_settings_keep_a_down_peers_queue_state_and_counters(
    relays: Relays, session: aiohttp.ClientSession
) -> None:
    peering = {"timeout_seconds": 1, "backoff_max_seconds": 0.5}
    cluster = await relays.mesh(2, peering=peering).start()
    admins = cluster.admins(session)
    for index, admin in enumerate(admins):
        assert (await admin.post(notification("PHID-K", unique_id=f"warm-{index}")))[0] == 200

    async def links() -> list[dict[str, Any]]:
        return (await admins[0].status())["cluster"]  # type: ignore[no-any-return]

    async def peer_up() -> bool:
        return [link["state"] for link in await links()] == ["self", "up"]

    await eventually(peer_up, "node 0 knows itself and sees node 1 up")
    cluster[1].kill()
    queued = [f"queued-{n}" for n in range(5)]
    for unique_id in queued:
        assert (await admins[0].post(notification("PHID-K", unique_id=unique_id)))[0] == 200

    async def peer_down_with_all_queued() -> bool:
        link = (await links())[1]
        return bool(link["state"] == "down" and link["queue"] + link["in_flight"] == len(queued))

    await eventually(peer_down_with_all_queued, "node 0 holds the messages for node 1, down")
    before = await links()

    node = cluster[0]
    config = orjson.loads(node.config_path.read_bytes())
    config["peering"]["timeout_seconds"] = 1.5  # new settings: every link is renewed
    node.config_path.write_bytes(orjson.dumps(config))
    node.signal(signal.SIGHUP)

    async def reloaded() -> bool:
        return "configuration reloaded" in node.log

    await eventually(reloaded, "node 0 reloaded")
    own, peer = await links()
    assert own["state"] == "self"
    assert own["fingerprint"] == before[0]["fingerprint"]
    assert peer["state"] == "down"
    assert peer["fingerprint"] == before[1]["fingerprint"]
    assert peer["queue"] + peer["in_flight"] == len(queued), "the queued messages were lost"
    assert peer["sent"] >= before[1]["sent"]
    assert peer["failed"] >= before[1]["failed"], "a counter ran backwards"

    await cluster.start(1)

    async def all_sent() -> bool:
        link = (await links())[1]
        return bool(link["state"] == "up" and link["queue"] == link["in_flight"] == 0)

    await eventually(all_sent, "node 0 sent node 1 what it held")
    browser = await cluster[1].browser("PHID-K")
    await browser.send("replay", {"age": 60_000})
    replayed = [message["uniqueID"] for message in await browser.drain()]
    assert replayed == queued
    await browser.close()
