"""The envelope of the messages a node makes up itself, with one unique-ID scheme.

Phorge's messages arrive whole; relay's own (the node status of the live
page, the cluster-status module's reports, ``relay notify``'s test message)
are wrapped here, so they look like Phorge's to a browser.
"""

from __future__ import annotations

import os
import string
from typing import Any

_UNIQUE_ID_ALPHABET = (string.ascii_letters + string.digits).encode()
#: Each random byte mapped to a letter or digit. 256 is not a multiple of 62,
#: so eight characters come up 5/256 of the time and the rest 4/256: about
#: 190 random bits per ID all the same, and one C call instead of 32 draws,
#: which matters since a node names every post that comes without an ID.
_TO_ALPHABET = bytes(_UNIQUE_ID_ALPHABET[byte % 62] for byte in range(256))


def new_unique_id() -> str:
    """32 random letters and digits, like the ``uniqueID`` Phorge puts on messages."""
    return os.urandom(32).translate(_TO_ALPHABET).decode()


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
