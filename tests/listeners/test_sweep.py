"""The liveness sweep checks browsers a slice at a time, and posts go out between slices.

One round checks every browser of the listener, and pings those gone silent:
at 16,000 browsers a worker, done in one turn of the loop, it held every post
behind it for hundreds of milliseconds. Here a post is published while a
round over three slices of browsers is under way: the browser subscribed to
it is written to before the round's last check, not after it.
"""

from __future__ import annotations

from typing import cast

import orjson
import pytest

from relay.core.notification import parse_notification
from relay.listeners.browser import BrowserConnection
from relay.listeners.client_listener import SWEEP_SLICE
from relay.node.node import Node
from tests.broker.test_broker import StartNode, open_browser


class _Checked:
    """Stands for one browser in the round: says when it is checked.

    The first one checked publishes a post (the round's order is the set's).
    """

    def __init__(self, node: Node, events: list[str]) -> None:
        self._node = node
        self._events = events

    def check_liveness(self, now: float) -> None:
        if "check" not in self._events:  # a post arrives as the round begins
            raw = orjson.dumps({"subscribers": ["PHID-K"], "uniqueID": "during"})
            self._node.hub.publish("default", parse_notification(raw))
        self._events.append("check")

    def abort(self) -> None:
        """Not called: checking never fails here."""


async def test_a_post_goes_out_between_slices_of_a_liveness_round(
    start_node: StartNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await start_node()
    browser = await open_browser(node, "PHID-K")
    listener = node.client_listeners[0]
    events: list[str] = []
    write_queued = BrowserConnection.write_queued

    def recorded(connection: BrowserConnection, now: float) -> None:
        events.append("write")
        write_queued(connection, now)

    monkeypatch.setattr(BrowserConnection, "write_queued", recorded)
    checked = [_Checked(node, events) for _ in range(3 * SWEEP_SLICE)]
    for stand_in in checked:
        listener.track(cast(BrowserConnection, stand_in))
    try:
        await listener._sweep()
    finally:
        for stand_in in checked:
            listener.untrack(cast(BrowserConnection, stand_in))
    assert events.count("check") == 3 * SWEEP_SLICE  # the real browser is checked unseen
    last_check = len(events) - 1 - events[::-1].index("check")
    assert "write" in events[:last_check]  # written half-way, not after the round
    assert (await browser.recv())["uniqueID"] == "during"
    await browser.close()
