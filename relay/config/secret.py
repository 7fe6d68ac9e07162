"""The admin port's shared secret: read from a file or the environment, never logged."""

from __future__ import annotations

import hmac
import os

from relay.config.models import AdminConfig
from relay.config.secretfile import read_secret_file
from relay.errors import StartupError


class Secret:
    """A secret value that does not show itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        """Wrap ``value``."""
        self._value = value.encode()

    def matches(self, offered: str) -> bool:
        """Compare in constant time, so timing reveals nothing of the secret."""
        # aiohttp hands non-UTF-8 header bytes over as surrogate escapes.
        return hmac.compare_digest(self._value, offered.encode("utf-8", "surrogateescape"))

    def bearer(self) -> str:
        """The Authorization header value that carries the secret."""
        return "Bearer " + self._value.decode()

    def __eq__(self, other: object) -> bool:
        """Two secrets are equal when their values are (compared in constant time)."""
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    # Compared by value, never used as a dict key or set member.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        """A placeholder: the value never shows."""
        return "Secret('********')"

    __str__ = __repr__


def load_secret(admin: AdminConfig) -> Secret | None:
    """The configured secret, or None when the admin port is open to any poster.

    Raises:
        StartupError: the file or variable is missing or empty (it is not echoed).
    """
    # Surrounding white space is dropped too: HTTP drops it from the header
    # that carries the secret, so a secret could never match with it.
    if admin.secret_file:
        try:
            value = read_secret_file(admin.secret_file).strip()
        except OSError as exc:
            raise StartupError(
                f"admin.secret_file: cannot read {admin.secret_file}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise StartupError(
                f"admin.secret_file: cannot read {admin.secret_file}: not UTF-8 text"
            ) from None
        where = f"admin.secret_file: {admin.secret_file}"
    elif admin.secret_env:
        value = os.environ.get(admin.secret_env, "").strip()
        where = f"admin.secret_env: the environment variable {admin.secret_env}"
    else:
        return None
    if not value:
        raise StartupError(f"{where} is empty or unset; the secret cannot be empty")
    return Secret(value)
