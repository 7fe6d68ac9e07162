"""Plain-text columns for the CLI's tables (``relay status``, ``relay cluster-status``).

Pure: strings in, lines out. Both tables lay their text out here, a table
with a header row (``columns``) or a block of named values (``pairs``), so
they align alike.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["columns", "pairs"]


def columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """``headers`` over ``rows`` as left-aligned columns two spaces apart, indented by two.

    Every row has one cell per header; trailing spaces are trimmed.
    """
    return _aligned([list(headers), *rows])


def pairs(named: Sequence[tuple[str, str]]) -> list[str]:
    """One ``name  value`` line per pair, the values aligned, indented by two; no header."""
    return _aligned(named)


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return []
    widths = [len(cell) for cell in rows[0]]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    return [
        "  " + "  ".join(cell.ljust(w) for w, cell in zip(widths, row, strict=True)).rstrip()
        for row in rows
    ]
