r"""Every secret relay reads, read one way: from a file or an environment variable.

The admin port's shared secret (``admin.secret_file``/``secret_env`` and the
CLI's ``--secret-file``), the broker's Redis password (``password_file``/
``password_env``) and the cluster-status database passwords (``pass_file``/
``pass_env``) all follow the same rules:

- surrounding white space is dropped, so the newline an editor adds (``\n``
  or ``\r\n``) goes; HTTP drops it from the header that carries the admin
  secret anyway, so such a secret could never match;
- an empty secret (or one of white space only) is refused, as is a field that
  names no file or no variable: an empty secret is a mistake, never a choice;
- a problem names the config field and the file or variable, with the OS's
  reason for an unreadable file, and never any part of the value.

``SecretSourceError`` carries the field and the problem apart, so the config
loader can place it at the field (``broker.password_env: ...``) and the
start-up checks can prefix it (``admin.secret_file: ...``).
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr
from pydantic_core import PydanticCustomError

from relay.errors import StartupError

__all__ = [
    "SECRET_SOURCE_ERROR",
    "Secret",
    "SecretSourceError",
    "SecretSources",
    "header_secret",
    "load_secret",
    "read_secret",
    "read_secret_validated",
    "secret_from_env",
    "secret_from_file",
    "validation_error",
]

#: The pydantic error type of a secret that cannot be read (see ``validation_error``).
SECRET_SOURCE_ERROR = "secret_source"


class SecretSourceError(ValueError):
    """A secret's file or variable gives no usable secret.

    ``field`` is the config field that named the source (None when the
    problem is the pair of fields, as when both are given), ``problem`` the
    plain-words reason; neither ever holds the secret.
    """

    def __init__(self, problem: str, field: str | None = None) -> None:
        """Report ``problem``, found at ``field``."""
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


def secret_from_file(path: str | Path, field: str) -> SecretStr:
    """The secret in the file at ``path``, which the config field ``field`` names.

    Raises:
        SecretSourceError: no path, the file cannot be read (with the OS's
            reason) or is not UTF-8 text, or it holds no secret.
    """
    if not str(path):
        raise SecretSourceError(
            "names no file; give the path of the file holding the secret", field
        )
    try:
        # No newline translation: a lone "\r" inside a secret stays as it is.
        with Path(path).open(encoding="utf-8", newline="") as handle:
            text = handle.read()
    except OSError as exc:
        raise SecretSourceError(
            f"cannot read {path}: {exc.strerror or type(exc).__name__}", field
        ) from None
    except UnicodeDecodeError:
        # The decoder's own message quotes the offending byte, a piece of the secret.
        raise SecretSourceError(f"cannot read {path}: not UTF-8 text", field) from None
    value = text.strip()
    if not value:
        raise SecretSourceError(f"the file {path} is empty; a secret cannot be empty", field)
    return SecretStr(value)


def secret_from_env(variable: str, field: str) -> SecretStr:
    """The secret in the environment variable ``variable``, which ``field`` names.

    Raises:
        SecretSourceError: no variable name, the variable is not set, or it
            holds no secret.
    """
    if not variable:
        raise SecretSourceError("names no environment variable", field)
    raw = os.environ.get(variable)
    if raw is None:
        raise SecretSourceError(f"the environment variable {variable} is not set", field)
    value = raw.strip()
    if not value:
        raise SecretSourceError(
            f"the environment variable {variable} is empty; a secret cannot be empty", field
        )
    return SecretStr(value)


def read_secret(
    *, file: str | Path | None, env: str | None, file_field: str, env_field: str
) -> SecretStr | None:
    """The secret from ``file`` or from the variable ``env``; None when neither is given.

    ``file_field`` and ``env_field`` are the config fields that name them, as
    the problems show them.

    Raises:
        SecretSourceError: both are given, or the one given gives no secret.
    """
    if file is not None and env is not None:
        raise SecretSourceError(f'give "{file_field}" or "{env_field}", not both')
    if file is not None:
        return secret_from_file(file, file_field)
    if env is not None:
        return secret_from_env(env, env_field)
    return None


def read_secret_validated(
    *, file: str | Path | None, env: str | None, file_field: str, env_field: str
) -> SecretStr | None:
    """``read_secret`` for a model validator: a problem raises as the config's own error.

    Read while the config is validated, so that a missing file or variable is
    reported along with the config file's other problems, under its field.

    Raises:
        PydanticCustomError: both are given, or the one given gives no secret.
    """
    try:
        return read_secret(file=file, env=env, file_field=file_field, env_field=env_field)
    except SecretSourceError as exc:
        raise validation_error(exc) from None


def validation_error(error: SecretSourceError) -> PydanticCustomError:
    """``error`` as a pydantic error, for a model validator to raise.

    Its context keeps the field apart, so the config's problems name it as
    part of the location (``relay.config.problems``).
    """
    context = {"problem": error.problem, "field": error.field or ""}
    return PydanticCustomError(SECRET_SOURCE_ERROR, "{problem}", context)


class Secret:
    """The admin port's shared secret: never shown in repr, str or logs."""

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


class SecretSources(Protocol):
    """Where the admin secret comes from: ``AdminConfig``'s two fields.

    A protocol rather than the model itself, since the models import this module.
    """

    @property
    def secret_file(self) -> str | None:
        """The file holding the secret, or None."""

    @property
    def secret_env(self) -> str | None:
        """The environment variable holding the secret, or None."""


def load_secret(admin: SecretSources) -> Secret | None:
    """The admin port's secret, or None when the admin port is open to any poster.

    Raises:
        StartupError: the file or variable gives no secret; the message
            names the field (``admin.secret_file: ...``), never the value.
    """
    try:
        value = read_secret(
            file=admin.secret_file,
            env=admin.secret_env,
            file_field="admin.secret_file",
            env_field="admin.secret_env",
        )
        if value is None:
            return None
        field = "admin.secret_file" if admin.secret_file is not None else "admin.secret_env"
        return header_secret(value.get_secret_value(), field)
    except SecretSourceError as exc:
        raise StartupError(str(exc)) from None


def header_secret(value: str, field: str) -> Secret:
    """``value`` as the shared secret, which travels in ``Authorization: Bearer ...``.

    Raises:
        SecretSourceError: it holds a line break or another control
            character. No HTTP client can send those in a header: every POST
            would be refused, and a peer's every request fail.
    """
    # A tab is the one control character a header value may hold (RFC 9110).
    if any(c != "\t" and (c < " " or c == "\x7f") for c in value):
        raise SecretSourceError(
            "the secret holds a line break or another control character, which no HTTP "
            'header can carry (it is sent as "Authorization: Bearer <secret>"); put it '
            "on one line",
            field,
        )
    return Secret(value)
