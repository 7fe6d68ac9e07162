"""The liveness sweep: a pass over every browser in steps, each a slice per turn of the loop.

A pass checks every browser of the listener, and pings those gone silent:
at 16,000 browsers a worker, done at once, it held every post behind it for
hundreds of milliseconds.

- A pass is spread over ``SWEEP_STEPS`` steps, each checking an equal share
  of the browsers, every browser once; with no browser, the sweep wakes
  once a pass.
- Within a step, a post published as it begins (three slices of browsers
  here) is written to its browser before the step's last check, not after.
"""

from __future__ import annotations

from typing import cast

import orjson
import pytest

from relay.core.notification import parse_notification
from relay.listeners import client_listener
from relay.listeners.browser import BrowserConnection
from relay.listeners.client_listener import SWEEP_SLICE, SWEEP_STEPS
from relay.node.node import Node
from tests.broker.test_broker import StartNode, open_browser
from tests.support import local_config

#: The node's own sweep waits 22 s before its first step: the tests step it themselves.
_QUIET = local_config(limits={"ping_interval_seconds": 3600, "ping_timeout_seconds": 3600})


class _Checked:
    """Stands for one browser in the sweep: says when it is checked.

    With ``posting``, the first one checked publishes a post (the order is the set's).
    """

    def __init__(self, node: Node, events: list[object], *, posting: bool = True) -> None:
        self._node = node
        self._events = events
        self._posting = posting

    def check_liveness(self, now: float) -> None:
        if self._posting and "check" not in self._events:  # a post comes as the step begins
            raw = orjson.dumps({"subscribers": ["PHID-K"], "uniqueID": "during"})
            self._node.hub.publish("default", parse_notification(raw))
        self._events.append("check" if self._posting else self)

    def abort(self) -> None:
        """Not called: checking never fails here."""


async def test_a_pass_checks_every_browser_once_in_equal_steps(start_node: StartNode) -> None:
    node = await start_node(_QUIET)
    listener = node.client_listeners[0]
    checked: list[object] = []
    stand_ins = [_Checked(node, checked, posting=False) for _ in range(10 * SWEEP_STEPS)]
    for stand_in in stand_ins:
        listener.track(cast(BrowserConnection, stand_in))
    pass_seconds = 3600 / 4  # a quarter of the ping interval (and timeout)
    assert listener._sweep_interval() == pass_seconds / SWEEP_STEPS
    try:
        steps = []
        for _ in range(SWEEP_STEPS):
            before = len(checked)
            await listener._sweep()
            steps.append(len(checked) - before)
        assert steps == [10] * SWEEP_STEPS
        assert sorted(map(id, checked)) == sorted(map(id, stand_ins))
        await listener._sweep()  # the next pass begins: the first share again
        assert len(checked) == 10 * SWEEP_STEPS + 10
    finally:
        for stand_in in stand_ins:
            listener.untrack(cast(BrowserConnection, stand_in))
    assert listener._sweep_interval() == pass_seconds  # no browser: one wake a pass


async def test_a_post_goes_out_between_slices_of_a_liveness_step(
    start_node: StartNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_listener, "SWEEP_STEPS", 1)  # the whole pass in one step
    node = await start_node(_QUIET)
    browser = await open_browser(node, "PHID-K")
    listener = node.client_listeners[0]
    events: list[object] = []
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
