"""The status page's charts as the tests see them in Chromium: values, pixels, layout, pictures.

Each chart is a ``div#chart-<name>`` holding a uPlot chart; the page keeps
the uPlot objects in its global ``plots`` map, and each chart's dataset says
what it shows (``last``, ``samples``, and its time range ``from``/``to``
against the node's ``started``, in seconds on the browser's clock).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.chromium import Chromium
from tests.support import eventually

#: The charts every node shows; the others belong to modules (peers, broker, cluster status).
BASE_CHARTS = ("rate_in", "rate_out", "connections", "latency")

#: The widths the page is laid out for, and the screenshots' height.
WIDTHS = (1400, 800)
HEIGHT = 1000

DOCS = Path(__file__).parent.parent / "docs"


async def chart(chromium: Chromium, tab: str, name: str) -> dict[str, Any]:
    """What one chart shows: its newest value, samples, range, its highest value, its pixels."""
    value = await chromium.evaluate(
        tab,
        f"""(() => {{
          const box = document.getElementById('chart-{name}');
          if (!box) return null;
          const canvas = box.querySelector('canvas'), data = box.dataset;
          const column = (plots.get('{name}')?.data[1] || []).filter(v => v != null);
          return {{hidden: box.hidden, last: data.last, samples: +data.samples, from: +data.from,
                   to: +data.to, started: +data.started, peak: Math.max(0, ...column),
                   line: canvas ? canvas.toDataURL() : null}};
        }})()""",
    )
    assert value is not None, f"the page has no {name} chart"
    return value  # type: ignore[no-any-return]


async def pixels(chromium: Chromium, tab: str, name: str) -> dict[str, int]:
    """How much of a chart's canvas is painted, and how much in its first line's colour."""
    value = await chromium.evaluate(
        tab,
        f"""(() => {{
          const u = plots.get('{name}'), canvas = u.ctx.canvas;
          const probe = document.createElement('canvas').getContext('2d');
          probe.fillStyle = u.series[1].stroke();
          probe.fillRect(0, 0, 1, 1);
          const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
          const data = u.ctx.getImageData(0, 0, canvas.width, canvas.height).data;
          let painted = 0, line = 0;
          for (let i = 0; i < data.length; i += 4) {{
            if (data[i + 3] === 0) continue;
            painted++;
            const near = Math.abs(data[i] - r) + Math.abs(data[i + 1] - g)
              + Math.abs(data[i + 2] - b);
            if (data[i + 3] > 200 && near < 60) line++;
          }}
          return {{width: canvas.width, height: canvas.height, painted, line}};
        }})()""",
    )
    return value  # type: ignore[no-any-return]


async def laid_out(chromium: Chromium, tab: str, width: int) -> None:
    """Give the page a ``width`` x ``HEIGHT`` window and wait until every chart fits its box."""
    await chromium.resize(tab, width, HEIGHT)

    async def fitted() -> bool:
        return bool(
            await chromium.evaluate(
                tab,
                f"""innerWidth === {width} && [...plots].every(([name, u]) => {{
                  const box = document.querySelector(`#chart-${{name}} .plot`);
                  return box.offsetParent === null || u.width === box.clientWidth;
                }})""",
            )
        )

    await eventually(fitted, f"the charts fit a {width} px window")


async def overlaps(chromium: Chromium, tab: str) -> list[str]:
    """What spills over or overlaps: charts, their lines of text, figures, the page's width."""
    found = await chromium.evaluate(
        tab,
        """(() => {
          const problems = [];
          if (document.documentElement.scrollWidth > innerWidth) problems.push('sideways scroll');
          const charts = [...document.querySelectorAll('.chart')].filter(c => !c.hidden);
          const section = document.getElementById('charts').getBoundingClientRect();
          charts.forEach((c, i) => {
            const r = c.getBoundingClientRect();
            if (r.left < section.left - 1 || r.right > section.right + 1)
              problems.push(`${c.id} outside`);
            if (c.querySelector('canvas').getBoundingClientRect().right > r.right + 1)
              problems.push(`${c.id} canvas wider than its box`);
            for (const d of charts.slice(i + 1)) {
              const s = d.getBoundingClientRect();
              if (r.left < s.right && s.left < r.right && r.top < s.bottom && s.top < r.bottom)
                problems.push(`${c.id} overlaps ${d.id}`);
            }
            for (const part of ['head', 'note', 'readout']) {
              const line = c.querySelector(`.${part}`);
              if (line.scrollWidth > line.clientWidth) problems.push(`${c.id} ${part} cut off`);
            }
          });
          for (const b of document.querySelectorAll('.figure b')) {
            if (b.offsetParent !== null && b.scrollWidth > b.clientWidth)
              problems.push(`${b.id} cut off`);
          }
          return problems;
        })()""",
    )
    return found  # type: ignore[no-any-return]


async def screenshots(chromium: Chromium, tab: str, name: str, *, save: bool) -> None:
    """Take the page at each of ``WIDTHS``; with ``save``, write ``docs/<name>-<width>.png``."""
    for width in WIDTHS:
        await laid_out(chromium, tab, width)
        assert await overlaps(chromium, tab) == []
        picture = await chromium.screenshot(tab)
        assert picture.startswith(b"\x89PNG")
        if save:
            DOCS.mkdir(exist_ok=True)
            (DOCS / f"{name}-{width}.png").write_bytes(picture)
