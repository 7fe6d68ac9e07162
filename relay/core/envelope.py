"""The envelope of the messages a node makes up itself, with one unique-ID scheme.

Phorge's messages arrive whole; relay's own (the node status of the live
page, the cluster-status module's reports, ``relay notify``'s test message)
are wrapped here, so they look like Phorge's to a browser.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

_UNIQUE_ID_ALPHABET = string.ascii_letters + string.digits


def new_unique_id() -> str:
    """32 random letters and digits, like the ``uniqueID`` Phorge puts on messages."""
    return "".join(secrets.choice(_UNIQUE_ID_ALPHABET) for _ in range(32))


def new_message(
    key: str, type_: str, data: dict[str, Any] | None = None, *, unique_id: str | None = None
) -> dict[str, Any]:
    """An ordinary relay message addressed to the subscribers of ``key``.

    ``data`` is left out when None; ``unique_id`` defaults to a new one.
    """
    message: dict[str, Any] = {
        "key": key,
        "type": type_,
        "subscribers": [key],
        "uniqueID": new_unique_id() if unique_id is None else unique_id,
    }
    if data is not None:
        message["data"] = data
    return message
