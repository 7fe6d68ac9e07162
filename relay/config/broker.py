"""The ``broker`` section of relay's config file: which Redis the nodes meet in, and how.

``{"broker": {"url": "redis://host:6379/0"}}`` turns broker mode on. The
password never sits in the URL (it would end up in logs and status): it comes
from ``password_file`` or ``password_env``, read by the rules of
``relay.config.secrets`` while the config is validated (so a missing file is
reported with the config file and the field), and is held as a
``pydantic.SecretStr`` that prints as stars.
"""

from __future__ import annotations

import difflib
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from relay.config.secrets import read_secret_validated

#: Default bound of the bytes one queue of outgoing messages holds (to Redis, or to one peer).
QUEUE_MAX_BYTES = 64 * 1024 * 1024

__all__ = ["BrokerConfig", "SentinelAddress"]

_SCHEMES = ("redis", "rediss", "unix")
#: The query options redis-py reads from a URL (``redis.asyncio.connection``'s
#: parsers; a test keeps the two alike). It hands any other name to the
#: connection as is, which fails only when connecting, on every retry.
URL_OPTIONS = (
    "db",
    "health_check_interval",
    "legacy_responses",
    "max_connections",
    "protocol",
    "retry_on_error",
    "retry_on_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "socket_read_size",
    "socket_timeout",
    "ssl_check_hostname",
    "ssl_exclude_verify_flags",
    "ssl_include_verify_flags",
    "ssl_min_version",
    "timeout",
)
# What stands where the scheme should: a word and the separators after it.
_SCHEME_LIKE_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)(:?/+)")
# Key and channel names are built from the prefix; keep it free of glob characters,
# since the subscription is a pattern.
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class SentinelAddress(BaseModel):
    """One Redis Sentinel the nodes ask where the master is."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, hide_input_in_errors=True)

    host: str = Field(min_length=1)
    port: int = Field(default=26379, ge=1, le=65535)


class BrokerConfig(BaseModel):
    """How a node reaches Redis, and how it rides out Redis being away."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, populate_by_name=True, hide_input_in_errors=True
    )

    #: ``redis://[user@]host:port/db``, ``rediss://`` for TLS, or ``unix:///path?db=N``.
    url: str = Field(min_length=1)
    #: The Redis password (``requirepass`` or an ACL user's), read from a file...
    password_file: str | None = None
    #: ...or from an environment variable; never written in the config file.
    password_env: str | None = None
    #: Redis Sentinels to ask for the master; then the URL's host is the master's
    #: name as Sentinel knows it (``redis://mymaster/0``) and the URL has no port.
    sentinels: tuple[SentinelAddress, ...] = ()
    #: CA bundle that signs the Redis server's certificate (``rediss://`` only);
    #: the system's trust store when null.
    ca_file: str | None = None
    #: Verify the server's certificate and host name (``rediss://`` only).
    tls_verify: bool = True
    #: Namespace of every key and channel, so several relay clusters can share one Redis.
    prefix: str = "relay"
    #: Posts waiting to be published while Redis is away; the oldest are dropped past this.
    queue_size: int = Field(default=10_000, ge=1)
    #: ...or past this many bytes of them (large posts: 10,000 of 1 MiB would be 10 GB).
    queue_max_bytes: int = Field(default=QUEUE_MAX_BYTES, ge=64 * 1024)
    #: Queued posts older than this are dropped: a replay would not return them any more.
    queue_max_age_seconds: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    #: Time to open a connection to Redis.
    connect_timeout_seconds: float = Field(default=2.0, gt=0, allow_inf_nan=False)
    #: Time one command (or one pipelined batch) may take before Redis counts as down.
    timeout_seconds: float = Field(default=2.0, gt=0, allow_inf_nan=False)
    #: The subscription is pinged this often when no message arrives...
    ping_interval_seconds: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    #: ...and re-established when nothing at all (not even the pong) arrived for this long.
    stale_seconds: float = Field(default=3.0, gt=0, allow_inf_nan=False)
    #: Each node (each worker) announces itself in Redis this often (README, "Presence").
    presence_interval_seconds: float = Field(default=2.0, ge=0.05, allow_inf_nan=False)
    #: First reconnection delay; it doubles per failure (with jitter) up to the max.
    backoff_initial_seconds: float = Field(default=0.1, gt=0, allow_inf_nan=False)
    backoff_max_seconds: float = Field(default=2.0, gt=0, allow_inf_nan=False)

    _password: SecretStr | None = PrivateAttr(default=None)

    @field_validator("url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        _check_url(url)
        return url

    @field_validator("prefix")
    @classmethod
    def _plain_prefix(cls, prefix: str) -> str:
        if not _PREFIX_RE.match(prefix):
            raise ValueError(
                'must be 1-64 letters, digits, "_", "." or "-" (it names Redis keys and channels)'
            )
        return prefix

    @model_validator(mode="after")
    def _check(self) -> BrokerConfig:
        scheme = urlsplit(self.url).scheme
        if scheme != "rediss" and (self.ca_file is not None or not self.tls_verify):
            raise ValueError(
                '"ca_file" and "tls_verify" apply to "rediss://" URLs only; '
                f"this one is {scheme}://"
            )
        if self.sentinels:
            parts = urlsplit(self.url)
            if scheme == "unix" or parts.port is not None:
                raise ValueError(
                    'with "sentinels", "url" names the master as Sentinel knows it, '
                    "with no port: redis://mymaster/0 (or rediss://)"
                )
        if self.stale_seconds <= self.ping_interval_seconds:
            raise ValueError(
                '"stale_seconds" must be longer than "ping_interval_seconds", '
                "or every quiet subscription would count as stale"
            )
        return self

    @model_validator(mode="after")
    def _load_password(self) -> BrokerConfig:
        self._password = read_secret_validated(
            file=self.password_file,
            env=self.password_env,
            file_field="password_file",
            env_field="password_env",
        )
        return self

    @property
    def password(self) -> SecretStr | None:
        """The password, or None when Redis asks for none."""
        return self._password

    @property
    def display_url(self) -> str:
        """The URL as logs and status show it (it never carries a password)."""
        if not self.sentinels:
            return self.url
        sentinels = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
        return f"{self.url} (master from sentinels {sentinels})"

    @property
    def master_name(self) -> str:
        """With ``sentinels``: the master's name, as written in the URL (case kept)."""
        return urlsplit(self.url).netloc.rpartition("@")[2]

    @property
    def uses_tls(self) -> bool:
        """Whether the connection is TLS (``rediss://``)."""
        return self.url.startswith("rediss://")


def _check_url(url: str) -> None:
    """Refuse a URL redis-py could not use, or one that carries a password."""
    if any(c <= " " or c == "\x7f" for c in url):
        raise ValueError("must not hold spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL: {exc}") from None
    if parts.scheme not in _SCHEMES:
        raise ValueError(_scheme_problem(url, parts.scheme))
    query: dict[str, Any] = parse_qs(parts.query, keep_blank_values=True)
    if parts.password is not None or any("password" in name.lower() for name in query):
        raise ValueError(
            "must not carry a password (logs and status show the URL); "
            'use "password_file" or "password_env"'
        )
    unknown = sorted(name for name in query if name not in URL_OPTIONS)
    if unknown:
        raise ValueError(
            f'has the query option "{unknown[0][:40]}", which redis-py does not read (it '
            f"reads {', '.join(URL_OPTIONS)}); the broker section sets timeouts and TLS"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL needs a socket path, as unix:///run/redis.sock")
        return
    if not parts.hostname:
        raise ValueError(f"names no host; expected {parts.scheme}://host:6379/0")
    if port == 0:
        raise ValueError("port 0 is not a port Redis can listen on")
    database = parts.path.lstrip("/")
    if database and not database.isdigit():
        raise ValueError(f"the database must be a number, as /0, not /{database}")


def _scheme_problem(url: str, scheme: str) -> str:
    """Why ``url`` (whose scheme parsed as ``scheme``) does not start as it must.

    It says what was found and, when that looks like a slip, what was meant.
    Only the scheme and its separators are quoted, never the rest of the URL,
    which may carry a password.
    """
    wanted = "must start with redis://, rediss:// or unix://"
    if scheme and "://" in url:
        found, guess = f"{scheme}://", scheme
    else:
        # "redis//host" or "redis/host": the parser sees no scheme at all.
        # A bare "host:port" does not match, nor would a scheme help it.
        match = _SCHEME_LIKE_RE.match(url)
        if match is None:
            return (
                f"{wanted}, and has no scheme; write redis://host:port/0 for a Redis at host:port"
            )
        found, guess = match.group(0), match.group(1).lower()
    close = difflib.get_close_matches(guess, _SCHEMES, n=1, cutoff=0.75)
    meant = f'; did you mean "{close[0]}://"?' if close else ""
    return f'{wanted}, not "{found}"{meant}'
