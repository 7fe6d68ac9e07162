"""Values Phorge stores as JSON text, read as Phorge (PHP) reads them.

Pure. Almanac properties and a working copy's ``writeProperties`` are JSON
written by PHP: relay decodes them leniently (text that is not JSON counts as
no value, never as an error) and judges truth the way PHP does.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["decode_json", "json_number", "json_object", "nonempty_text", "php_truthy"]


def php_truthy(value: Any) -> bool:
    """Truthiness as Phorge (PHP) sees a decoded JSON value: ``"0"`` and ``""`` are false."""
    if isinstance(value, str):
        return value not in ("", "0")
    return bool(value)


def decode_json(text: str | None) -> Any:
    """``text`` decoded as JSON; None when it is None or not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def json_object(text: str | None) -> dict[str, Any]:
    """``text`` decoded as a JSON object; an empty dict when it is anything else."""
    value = decode_json(text)
    return value if isinstance(value, dict) else {}


def nonempty_text(value: Any) -> str | None:
    """``value`` if it is a non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def json_number(value: Any) -> float | None:
    """``value`` as a float if it is a JSON number (not a boolean), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
