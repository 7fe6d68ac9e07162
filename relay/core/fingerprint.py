"""Node fingerprints: the random name a node picks at start to recognise its own messages."""

from __future__ import annotations

import secrets

#: Aphlict's alphabet: no 0/1/O/I/l/o, so fingerprints read unambiguously in logs.
ALPHABET = "23456789abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"
LENGTH = 16


def new_fingerprint() -> str:
    """A fresh random fingerprint, as Aphlict makes them."""
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
