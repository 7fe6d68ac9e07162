"""A redis-py client for one broker session: the URL's server, or the master Sentinel names.

Commands time out after ``timeout_seconds`` and are never retried inside
redis-py: the broker's supervisor retries whole sessions, with backoff. When
a session fails as if something other than Redis answered, ``what_answers``
looks at that server with a raw socket and says what it is instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay.config.broker import BrokerConfig
from relay.links.broker_answer import PROBE, describe

#: The most the probe reads of a foreign server's answer.
PROBE_READ = 256


def new_client(config: BrokerConfig, fingerprint: str) -> tuple[aioredis.Redis, Sentinel | None]:
    """A client for one session (and, with Sentinel, the Sentinel client to close after it)."""
    options: dict[str, Any] = {
        "socket_timeout": config.timeout_seconds,
        "socket_connect_timeout": config.connect_timeout_seconds,
        # The supervisor retries, with backoff; redis-py retrying inside a
        # command would only hold a publish up for longer.
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "client_name": f"relay-{fingerprint}",
    }
    if config.password is not None:
        options["password"] = config.password.get_secret_value()
    if config.uses_tls:
        options["ssl_ca_certs"] = config.ca_file
        options["ssl_cert_reqs"] = "required" if config.tls_verify else "none"
        options["ssl_check_hostname"] = config.tls_verify
    if not config.sentinels:
        return aioredis.Redis.from_url(config.url, **options), None
    parts = urlsplit(config.url)
    sentinel = Sentinel(
        [(address.host, address.port) for address in config.sentinels],
        sentinel_kwargs={
            "socket_timeout": config.timeout_seconds,
            "socket_connect_timeout": config.connect_timeout_seconds,
            "retry": Retry(NoBackoff(), 0),
        },
    )
    if parts.username:
        options["username"] = unquote(parts.username)
    if config.uses_tls:
        options["ssl"] = True
    options["db"] = int(parts.path.lstrip("/") or 0)
    # A new session asks the Sentinels again: after a fail-over, the new master.
    return sentinel.master_for(config.master_name, **options), sentinel


def may_not_be_redis(exc: BaseException, *, tls: bool) -> bool:
    """Whether ``exc`` is how redis-py fails when the server is something else than Redis.

    A reply that is not RESP, a connection closed before any reply, or a TLS
    handshake (``tls``: the URL says ``rediss://``) that fails for another
    reason than the certificate, or never ends (a plain Redis waits for the
    end of a line that a TLS greeting does not have).
    """
    if isinstance(exc, InvalidResponse):
        return True
    if tls and isinstance(exc, (RedisTimeoutError, TimeoutError)):
        return True
    if not isinstance(exc, RedisConnectionError):
        return False
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return False
    if isinstance(cause, (ssl.SSLError, ConnectionResetError)):
        return True
    return cause is None and "closed by server" in str(exc)


def describe_failure(exc: BaseException) -> str:
    """A one-line reason, without secrets (redis-py's messages carry no password)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    if isinstance(exc, MasterNotFoundError):
        text = _without_client_reprs(text)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


#: In redis-py's "No master found" message: each Sentinel's failure, after its client's repr.
_SENTINEL_FAILURE = re.compile(r" - ([^<]*?)(?:, <|$)")


def _without_client_reprs(text: str) -> str:
    """redis-py's "No master found for 'name' : <client repr> - error, ..." without the reprs.

    Each Sentinel's failure comes after a repr of its whole client (a few
    kilobytes: pool, retry and connection options), which would fill the
    operator's screen, the log line and ``/status/`` for one refused port.
    """
    head, _, rest = text.partition(" : ")
    failures = _SENTINEL_FAILURE.findall(rest)
    return f"{head}: {'; '.join(failures)}" if failures else head


async def failure_reason(config: BrokerConfig, exc: BaseException) -> str:
    """Why talking to Redis failed with ``exc``: what answers at its address, if not Redis."""
    if may_not_be_redis(exc, tls=config.uses_tls):
        found = await what_answers(config)
        if found is not None:
            return found
    return describe_failure(exc)


async def reach(config: BrokerConfig, name: str) -> str | None:
    """Connect to Redis as the broker link would and PING it; the reason it fails, or None.

    For ``check-config --connect``: the same client options, timeouts and
    password; ``name`` is the client name Redis shows for the connection.
    """
    client, sentinel = new_client(config, name)
    try:
        async with asyncio.timeout(config.connect_timeout_seconds + config.timeout_seconds):
            await client.ping()
    except (RedisError, OSError, TimeoutError, ValueError) as exc:
        return await failure_reason(config, exc)
    finally:
        await client.aclose()
        if sentinel is not None:
            await sentinel.aclose()
    return None


async def what_answers(config: BrokerConfig) -> str | None:
    """Say what answers at the URL's address when it is not Redis; None when it is, or unknown.

    Sends ``PROBE`` in plain text and reads the first bytes back; a server
    that closes at once is then tried with a TLS handshake (certificate not
    checked: only whether it speaks TLS). Only for a URL's own host and port
    (not with Sentinels, nor a Unix socket). Never raises.
    """
    parts = urlsplit(config.url)
    if config.sentinels or parts.scheme == "unix" or not parts.hostname:
        return None
    host, port = parts.hostname, parts.port or 6379
    connect, wait = config.connect_timeout_seconds, config.timeout_seconds
    try:
        reply = await _first_bytes(host, port, connect, wait)
        speaks_tls = (
            reply == b"" and not config.uses_tls and await _handshakes_tls(host, port, connect)
        )
    except (OSError, TimeoutError):
        return None  # gone, refused: the client's own reason says it better
    return describe(reply, speaks_tls=speaks_tls, url_uses_tls=config.uses_tls)


async def _first_bytes(host: str, port: int, connect: float, wait: float) -> bytes | None:
    """What the server sends back to ``PROBE``: b"" if it closed, None if silent."""
    async with asyncio.timeout(connect):
        reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(PROBE)
        try:
            async with asyncio.timeout(wait):
                return await reader.read(PROBE_READ)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return b""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _handshakes_tls(host: str, port: int, connect: float) -> bool:
    """Whether a TLS handshake with the address succeeds (nothing is verified)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(connect):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
