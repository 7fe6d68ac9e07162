"""How the CLI words lengths of time and counts of things.

Pure. One duration formatter for both tables, so an uptime, a history age,
a replication delay and a repository lag read alike (``12.5 s``, ``1m 35s``,
``2h 5m``, ``3d 4h``); and counts that read right for one and for many.
"""

from __future__ import annotations

__all__ = ["counted", "format_duration"]

_MINUTE = 60
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR


def format_duration(seconds: float) -> str:
    """``seconds`` in its two largest units: ``0.4 s``, ``45 s``, ``1m 35s``, ``2h``, ``3d 4h``.

    Under a minute it keeps a tenth of a second (dropped when it is ``.0``);
    above, whole units, the smaller one left out when it is zero. A negative
    value (clocks of two machines apart) reads as ``0 s``.
    """
    tenths = round(max(seconds, 0.0), 1)
    if tenths < _MINUTE:
        return f"{tenths:.1f}".removesuffix(".0") + " s"
    whole = int(tenths)
    if whole >= _DAY:
        return _two_units(whole, _DAY, "d", _HOUR, "h")
    if whole >= _HOUR:
        return _two_units(whole, _HOUR, "h", _MINUTE, "m")
    return _two_units(whole, _MINUTE, "m", 1, "s")


def _two_units(whole: int, big: int, big_unit: str, small: int, small_unit: str) -> str:
    rest = whole % big // small
    return f"{whole // big}{big_unit}" + (f" {rest}{small_unit}" if rest else "")


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``1 peer``, ``0 peers``, ``2 peers``: ``count`` and ``noun``, plural unless one.

    ``plural`` is for nouns that take more than an ``s``.
    """
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
