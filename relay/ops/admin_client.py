"""The HTTP client of ``relay status``, ``relay cluster-status`` and ``relay notify``.

It calls the first admin listener of a config file, with the shared secret
when one is configured, and turns every failure into a ``RelayError`` that
says what went wrong.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from typing import Any

import orjson

from relay.config import Config, ServerConfig
from relay.errors import RelayError
from relay.secret import load_secret
from relay.urls import url_host

#: Time allowed for a node to answer.
REQUEST_TIMEOUT = 5.0


def admin_request(config: Config, path: str, body: Any, *, insecure: bool) -> Any:
    """Call the first admin listener of ``config``; any failure is a RelayError saying why."""
    admin = config.listeners("admin")[0]
    url = admin_url(admin) + path.rstrip("?")
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    secret = load_secret(config.admin)
    if secret is not None:
        request.add_header("Authorization", secret.bearer())
    context = None
    if admin.uses_tls:
        context = ssl.create_default_context()
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT, context=context) as reply:
            return orjson.loads(reply.read())
    except urllib.error.HTTPError as exc:
        raise RelayError(f"{url}: the node answered {exc.code}: {exc.read().decode()}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RelayError(f"{url}: cannot reach the node's admin port: {reason}") from None


def admin_url(admin: ServerConfig) -> str:
    """The base URL of the admin listener ``admin``; a wildcard address means this host."""
    host = admin.bind_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"{'https' if admin.uses_tls else 'http'}://{url_host(host)}:{admin.port}"
