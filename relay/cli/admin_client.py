"""The command line's side of the admin port: which node to reach, and one request to it.

``relay status``, ``notify`` and ``cluster-status`` reach a node by URL
(``--url http://host:port``), by ``--host``/``--port``, or through a config
file's first admin listener; with none of these, Aphlict's default admin
port on this machine.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from relay.config import DEFAULT_ADMIN_PORT, Config, default_config
from relay.config.hosts import url_host
from relay.config.secrets import (
    Secret,
    SecretSourceError,
    header_secret,
    load_secret,
    secret_from_file,
)
from relay.errors import RelayError
from relay.listeners.handshake import PLAIN_HTTP_BODY, PLAIN_HTTP_STATUS

#: Time allowed for one request to get its whole answer.
REQUEST_TIMEOUT = 5.0
#: How much of an answer that is not relay's JSON error an error message quotes.
_QUOTED_CHARACTERS = 200


@dataclass(frozen=True)
class AdminTarget:
    """A node's admin port as the command line reaches it."""

    #: ``scheme://host:port``, without a path.
    base: str
    secret: Secret | None = None
    #: Check the node's TLS certificate (https only); off with ``--insecure``.
    verify_tls: bool = True
    #: Seconds the whole exchange may take, from connecting to the answer's last byte.
    timeout: float = REQUEST_TIMEOUT

    def request(
        self, path: str, body: Any = None, *, hints: Mapping[int, str] | None = None
    ) -> dict[str, Any]:
        """GET ``path`` (or POST ``body`` as JSON to it) and return the decoded JSON object.

        ``hints`` maps an HTTP status to what the operator can do about it,
        added to the error when the node answers that status.

        Raises:
            RelayError: the node is unreachable or answered with an error; the
                message names the URL and what the node said, in its words.
        """
        url = self.base + path
        data = orjson.dumps(body) if body is not None else None
        request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.secret is not None:
            # urllib sends a header as Latin-1; a secret outside ASCII goes as its UTF-8
            # bytes, as relay reads it and as aiohttp sends it between peers.
            request.add_header("Authorization", self.secret.bearer().encode().decode("latin-1"))
        context = None
        if self.base.startswith("https:"):
            context = ssl.create_default_context()
            if not self.verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        try:
            status, body = _exchange(request, context, self.timeout)
            if status >= 400:
                raise RelayError(_refusal(url, status, body, hints or {}))
            answer = orjson.loads(body)
        except TimeoutError:
            raise RelayError(
                f"{url}: no whole answer within {self.timeout:g} s; is the node overloaded?"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RelayError(f"{url}: cannot reach the node's admin port: {reason}") from None
        except orjson.JSONDecodeError:
            raise RelayError(
                f"{url}: the answer is not JSON; is this a relay admin port?"
            ) from None
        except http.client.IncompleteRead:
            raise RelayError(f"{url}: the answer was cut short; try again") from None
        except http.client.HTTPException as exc:
            # Something that is not an HTTP server listens there (http.client's
            # errors are not OSErrors, and would end the command in a traceback).
            raise RelayError(
                f"{url}: the answer is not HTTP ({type(exc).__name__}); is this a relay admin port?"
            ) from None
        if not isinstance(answer, dict):
            # Every answer of relay's admin port is an object; the commands read its fields.
            raise RelayError(f"{url}: the answer is not a JSON object; is this a relay admin port?")
        return answer


def _exchange(
    request: urllib.request.Request, context: ssl.SSLContext | None, timeout: float
) -> tuple[int, bytes]:
    """Send ``request``; return the answer's status and body, all within ``timeout`` seconds.

    urllib's timeout bounds each read from the socket, so an answer trickling
    in a byte at a time would hold the command for ever. The exchange runs on
    a daemon thread instead, given up on at the deadline (the command exits
    soon after, which closes its socket).

    Raises:
        TimeoutError: the answer did not arrive in whole in time.
        Exception: whatever urllib raised but an error status.
    """
    outcome: list[tuple[int, bytes] | Exception] = []

    def exchange() -> None:
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as reply:
                outcome.append((reply.status, reply.read()))
        except urllib.error.HTTPError as refused:
            with refused:
                outcome.append((refused.code, refused.read()))
        except Exception as exc:  # handed to the caller's thread, which reports it
            outcome.append(exc)

    worker = threading.Thread(target=exchange, name="relay-admin-request", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise TimeoutError
    [result] = outcome
    if isinstance(result, Exception):
        raise result
    return result


def _refusal(url: str, status: int, body: bytes, hints: Mapping[int, str]) -> str:
    """What to tell the operator when the node answered ``status``: what it said, what to do."""
    text = " ".join(body.decode(errors="replace").split())
    if status == PLAIN_HTTP_STATUS and text == PLAIN_HTTP_BODY.strip():
        # Aphlict's and relay's client port answer plain HTTP so: the operator
        # gave the port browsers connect to.
        return (
            f"{url}: the node answered {status} ({text}): that is a client port, where "
            'browsers connect; give its admin port instead (the config\'s "admin" server, '
            f"{DEFAULT_ADMIN_PORT} by default)"
        )
    said = _error_text(text)
    hint = hints.get(status)
    return f"{url}: the node answered {status}: {said}" + (f"; {hint}" if hint else "")


def _error_text(text: str) -> str:
    """The ``error`` of relay's JSON refusals, else the start of what was answered."""
    try:
        answer = orjson.loads(text)
    except orjson.JSONDecodeError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return str(answer["error"])
    if not text:
        return "(an empty answer)"
    if len(text) > _QUOTED_CHARACTERS:
        return text[:_QUOTED_CHARACTERS] + "..."
    return text


def find_target(
    config: Config | None,
    *,
    url: str | None = None,
    host: str | None = None,
    port: int | None = None,
    secret_file: str | None = None,
    insecure: bool = False,
) -> AdminTarget:
    """Where the command line's options say the node's admin port is.

    ``url`` wins; otherwise ``host`` and ``port`` replace those of the
    config's first admin listener (or of Aphlict's default). The secret comes
    from ``secret_file``, else from the config.

    Raises:
        RelayError: the options contradict each other or a value is unusable.
    """
    if url is not None and (host is not None or port is not None):
        raise RelayError("give --url or --host/--port, not both")
    secret = _read_secret_file(secret_file) if secret_file else None
    if secret is None and config is not None:
        secret = load_secret(config.admin)
    if url is not None:
        return AdminTarget(_base_from_url(url), secret, not insecure)
    admin = (config or default_config()).listeners("admin")[0]
    scheme = "https" if admin.uses_tls else "http"
    chosen_host = host if host is not None else _reachable(admin.bind_host)
    if port is not None and not 1 <= port <= 65535:
        raise RelayError(f"--port: {port} is not a port (1 to 65535)")
    chosen_port = port if port is not None else admin.port
    if chosen_port == 0:
        raise RelayError(
            "the config's admin listener has port 0 (the OS picks one at start): "
            "give --port or --url"
        )
    return AdminTarget(f"{scheme}://{url_host(chosen_host)}:{chosen_port}", secret, not insecure)


def _base_from_url(url: str) -> str:
    """``scheme://host:port`` from what the operator typed, or a RelayError saying what is wrong."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https"):
        raise RelayError(f"--url: {url!r} must start with http:// or https://")
    try:
        port = parts.port
    except ValueError:
        raise RelayError(f"--url: {url!r} has an invalid port") from None
    if not parts.hostname:
        raise RelayError(f"--url: {url!r} names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise RelayError(f"--url: {url!r} must be the admin port's address only, without a path")
    if parts.username or parts.password:
        raise RelayError("--url: put no credentials in the URL; use --secret-file")
    return f"{parts.scheme}://{url_host(parts.hostname)}:{port or DEFAULT_ADMIN_PORT}"


def _read_secret_file(path: str) -> Secret:
    """The secret ``--secret-file`` names, read as the config's secrets are."""
    try:
        return header_secret(
            secret_from_file(path, "--secret-file").get_secret_value(), "--secret-file"
        )
    except SecretSourceError as exc:
        raise RelayError(str(exc)) from None


def _reachable(bind_host: str) -> str:
    """The address to call for a listener bound to ``bind_host`` (a wildcard means loopback).

    ``::`` means IPv6 loopback (such a listener takes IPv4 too, as Aphlict's does).
    """
    if bind_host == "::":
        return "::1"
    return "127.0.0.1" if bind_host in ("0.0.0.0", "") else bind_host
