"""The status page's charts in headless Chromium: drawn by uPlot, moving, fit to the node's age."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from relay.node.node import Node
from tests.chromium import Chromium
from tests.harness import Relays
from tests.redis_harness import RedisServer
from tests.status_page import BASE_CHARTS, WIDTHS, chart, laid_out, overlaps, pixels
from tests.support import Admin, Browser, eventually, local_config, notification

pytestmark = pytest.mark.slow

StartNode = Callable[..., Awaitable[Node]]
MODULE_SECTIONS = (
    "peers-section",
    "broker-section",
    "nodes-section",
    "databases-section",
    "repositories-section",
)


async def open_page(chromium: Chromium, node: Node) -> str:
    """The node's status page in a new tab, once it is live and has charted a few samples."""
    tab = await chromium.open(f"http://127.0.0.1:{node.admin_addresses[0][1]}/dashboard/")

    async def charting() -> bool:
        samples = await chromium.evaluate(
            tab, "document.getElementById('chart-rate_in')?.dataset.samples || 0"
        )
        return "live" in await chromium.text(tab) and int(samples) >= 3

    await eventually(charting, "the page is live and charting")
    return tab


async def test_the_charts_render_move_and_show_a_young_node_whole(
    start_node: StartNode, chromium: Chromium, session: aiohttp.ClientSession
) -> None:
    # The default ten-minute window: a node seconds old must still fill the charts.
    node = await start_node(local_config(dashboard={"interval_seconds": 0.2}))
    tab = await open_page(chromium, node)
    await laid_out(chromium, tab, 1400)

    # Rendered: a painted uPlot canvas for each chart, its line in its colour.
    for name in BASE_CHARTS:
        picture = await pixels(chromium, tab, name)
        assert picture["width"] > 300, name
        assert picture["height"] > 100, name
        assert picture["painted"] > 1000, name  # gridlines, axes and labels at least
    for name in ("rate_in", "rate_out", "connections"):
        assert (await pixels(chromium, tab, name))["line"] > 50, name

    # The whole life of a young node: the time axis starts at its start, not ten minutes ago.
    young = await chart(chromium, tab, "rate_in")
    assert young["from"] == young["started"]
    age = await chromium.evaluate(tab, "Date.now() / 1000") - young["from"]
    assert age == pytest.approx(node.hub.uptime_ms() / 1000, abs=1.0)
    assert young["to"] - young["from"] < 60
    axis = await chromium.evaluate(
        tab,
        "(() => { const u = plots.get('rate_in');"
        " return {min: u.scales.x.min, max: u.scales.x.max, first: u.data[0][0]}; })()",
    )
    assert axis["min"] == young["from"]
    # The first sample was taken as the node began serving, moments after it started.
    assert axis["first"] - axis["min"] < 0.5
    assert "since the node started" in (await chromium.text(tab)).lower()

    # They move: traffic to a browser raises the rates and draws the latency.
    browser = await Browser.open(node.client_addresses[0][1])
    await browser.subscribe("PHID-CHART")
    admin = Admin(session, node.admin_addresses[0][1])
    for round_ in range(3):  # over three samples, so each chart draws a stretch of line
        seen = (await chart(chromium, tab, "rate_in"))["samples"]
        for n in range(10):
            assert (await admin.post(notification("PHID-CHART", n=n, round=round_)))[0] == 200

        async def sampled(seen: int = seen) -> bool:
            return bool((await chart(chromium, tab, "rate_in"))["samples"] > seen)

        await eventually(sampled, "the page charts a new sample")

    async def moved() -> bool:
        now = await chart(chromium, tab, "rate_in")
        latency = await chart(chromium, tab, "latency")
        deliveries = await chart(chromium, tab, "rate_out")
        return bool(
            now["samples"] > young["samples"]
            and now["line"] != young["line"]
            and now["peak"] > 0
            and deliveries["peak"] > 0
            and latency["peak"] > 0
        )

    await eventually(moved, "the charts move with the traffic")
    assert (await pixels(chromium, tab, "latency"))["line"] > 10
    await browser.close()

    # Hovering reads out one moment, on every chart at once.
    over = await chromium.evaluate(
        tab,
        "(() => { const r = document.querySelector('#chart-rate_in .u-over')"
        ".getBoundingClientRect();"
        " return {x: r.left + r.width * 0.6, y: r.top + r.height / 2}; })()",
    )
    await chromium.call("Input.dispatchMouseEvent", {"type": "mouseMoved", **over}, tab)
    readouts = await chromium.evaluate(
        tab, "[...document.querySelectorAll('.chart:not([hidden]) .readout')].map(r => r.innerText)"
    )
    moment = re.match(r"\d\d:\d\d:\d\d\s", readouts[0])
    assert moment is not None, readouts
    assert all(r.startswith(moment[0]) for r in readouts), readouts
    assert "/s" in readouts[0]  # with its unit
    assert "mean" in readouts[3]  # latency: both lines
    assert "max" in readouts[3]


async def test_the_page_holds_its_layout_and_hides_modules_that_are_off(
    start_node: StartNode, chromium: Chromium
) -> None:
    node = await start_node(local_config(dashboard={"interval_seconds": 0.2}))
    tab = await open_page(chromium, node)
    for width in WIDTHS:
        await laid_out(chromium, tab, width)
        assert await overlaps(chromium, tab) == [], width
        columns = await chromium.evaluate(
            tab, "getComputedStyle(document.getElementById('charts')).gridTemplateColumns"
        )
        assert len(columns.split()) == 2, (width, columns)  # four charts: two by two
    # "Last update" is one line, with the time zone.
    updated = await chromium.evaluate(
        tab,
        "(() => { const b = document.getElementById('updated');"
        " const line = parseFloat(getComputedStyle(b).lineHeight);"
        " return {text: b.innerText, lines: Math.round(b.offsetHeight / line)}; })()",
    )
    assert re.fullmatch(r"\d\d:\d\d:\d\d \S+", updated["text"]), updated
    assert updated["lines"] == 1
    # No peers, no broker, no cluster-status module: none of their sections or charts.
    for section in MODULE_SECTIONS:
        assert await chromium.evaluate(tab, f"document.getElementById('{section}').hidden")
    for name in ("peer_queue", "broker", "databases"):
        assert (await chart(chromium, tab, name))["hidden"], name
    text = await chromium.text(tab)
    assert "the cluster-status module is off on this node" in text
    assert "Databases\n" not in text
    assert "Cluster peers" not in text


async def test_an_older_node_shows_the_last_window_only(
    start_node: StartNode, chromium: Chromium
) -> None:
    node = await start_node(local_config(dashboard={"interval_seconds": 0.1, "chart_seconds": 1}))
    tab = await open_page(chromium, node)

    async def older() -> bool:
        shown = await chart(chromium, tab, "rate_in")
        return bool(shown["to"] - shown["started"] > 1.5)

    await eventually(older, "the node outlives its chart window")
    shown = await chart(chromium, tab, "rate_in")
    assert shown["to"] - shown["from"] == pytest.approx(1.0, abs=0.01)
    assert shown["from"] > shown["started"]
    assert shown["samples"] <= 12  # one window of samples, not the node's whole life
    assert "the last 1 seconds" in (await chromium.text(tab)).lower()


async def test_broker_mode_lists_every_node_of_the_prefix_in_the_cluster_table(
    start_node: StartNode, chromium: Chromium, redis_server: RedisServer
) -> None:
    broker = {"url": redis_server.url, "presence_interval_seconds": 0.2}
    dashboard = {"interval_seconds": 0.2}
    node = await start_node(local_config(dashboard=dashboard, broker=broker))
    other = await start_node(local_config(dashboard=dashboard, broker=broker))
    browser = await Browser.open(other.client_addresses[0][1])
    tab = await open_page(chromium, node)

    async def both_listed() -> bool:
        rows = await chromium.evaluate(
            tab, "[...document.querySelectorAll('#nodes tr')].map(r => r.innerText)"
        )
        return len(rows) == 2 and all("fresh" in row for row in rows)

    await eventually(both_listed, "the Cluster table lists both nodes, fresh")
    assert not await chromium.evaluate(tab, "document.getElementById('nodes-section').hidden")
    fingerprints = {node.hub.fingerprint, other.hub.fingerprint}
    rows = await chromium.evaluate(
        tab, "[...document.querySelectorAll('#nodes tr td:last-child')].map(td => td.innerText)"
    )
    assert set(rows) == fingerprints

    async def counted() -> bool:
        totals = await chromium.evaluate(tab, "document.getElementById('nodes-totals').innerText")
        return "1 node, 2 processes (0 stale), 2 browsers" in totals

    # Two Node objects in one test process: one node (one pid), two processes; the page
    # itself is a browser of the first.
    await eventually(counted, "the totals count the browser connected to the other node")
    await browser.close()


async def test_broker_mode_shows_the_link_and_charts_its_outage(
    start_node: StartNode, chromium: Chromium, redis_server: RedisServer
) -> None:
    node = await start_node(
        local_config(dashboard={"interval_seconds": 0.2}, broker={"url": redis_server.url})
    )
    tab = await open_page(chromium, node)

    async def shows_the_broker() -> bool:
        text = await chromium.text(tab)
        return "Waiting for Redis" in text and "posts waiting for Redis" in text

    await eventually(shows_the_broker, "the page shows the broker section and chart")
    assert not (await chart(chromium, tab, "broker"))["hidden"]
    assert (await chart(chromium, tab, "peer_queue"))["hidden"]
    assert await chromium.evaluate(tab, "document.getElementById('peers-section').hidden")
    await asyncio.to_thread(redis_server.kill)

    async def outage_charted() -> bool:
        state = await chromium.evaluate(tab, "document.getElementById('broker-state').innerText")
        shaded = await chromium.evaluate(
            tab, "document.querySelector('#chart-broker .readout .bad')?.innerText || ''"
        )
        return state == "down" and "Redis unreachable" in shaded

    await eventually(outage_charted, "the page shows Redis away, and shades the chart")


async def test_a_mesh_lists_every_node_in_the_cluster_table(
    relays: Relays, chromium: Chromium
) -> None:
    cluster = await relays.mesh(
        3, peering={"presence_interval_seconds": 0.2}, dashboard={"interval_seconds": 0.2}
    ).start()
    tab = await chromium.open(cluster[0].admin_url + "/dashboard/")

    async def all_listed() -> bool:
        rows = await chromium.evaluate(
            tab, "[...document.querySelectorAll('#nodes tr')].map(r => r.innerText)"
        )
        return len(rows) == 3 and all("fresh" in row for row in rows)

    await eventually(all_listed, "the Cluster table lists the three mesh nodes, fresh")
    assert not await chromium.evaluate(tab, "document.getElementById('nodes-section').hidden")
    note = await chromium.evaluate(tab, "document.getElementById('nodes-note').innerText")
    assert note.startswith("mesh peers")
    pids = {node.pid for node in cluster}
    rows = await chromium.evaluate(
        tab, "[...document.querySelectorAll('#nodes tr')].map(r => r.innerText)"
    )
    assert {pid for pid in pids if any(f":{pid}" in row for row in rows)} == pids
