"""Reading a secret from a file: the one way relay does it, for every password it reads.

Used for the admin port's shared secret (``admin.secret_file``), the
cluster-status module's database passwords (``pass_file``) and the broker's
Redis password (``broker.password_file``).
"""

from __future__ import annotations

from pathlib import Path


def read_secret_file(path: str | Path) -> str:
    r"""The secret in ``path``, byte for byte but for one trailing newline (editors add it).

    No newline translation: ``"pw\r\n"`` gives ``"pw"``, ``"pw\r"`` stays as it is.

    Raises:
        OSError: the file cannot be read.
        UnicodeDecodeError: the file is not UTF-8 text.
    """
    with Path(path).open(encoding="utf-8", newline="") as handle:
        text = handle.read()
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text
