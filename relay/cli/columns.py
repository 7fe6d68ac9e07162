"""Plain-text columns for the CLI's tables (``relay status``, ``relay cluster-status``).

Pure: strings in, lines out.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["columns"]


def columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """``headers`` over ``rows`` as left-aligned columns two spaces apart, indented by two.

    Every row has one cell per header; trailing spaces are trimmed.
    """
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    return [
        "  " + "  ".join(cell.ljust(w) for w, cell in zip(widths, row, strict=True)).rstrip()
        for row in [list(headers), *rows]
    ]
