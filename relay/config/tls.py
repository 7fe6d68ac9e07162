"""TLS contexts from the config: the listeners' (Aphlict's ``ssl.*``) and the peers' client side."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from relay.config.models import PeerConfig, PeeringConfig, ServerConfig
from relay.errors import StartupError


def server_context(server: ServerConfig, where: str) -> ssl.SSLContext | None:
    """A server-side TLS context for ``server``, or None when it serves plain text.

    The chain file, when given, is appended to the certificate so that
    browsers receive the full chain, as Aphlict serves it. ``where`` names the
    server entry in errors.

    Raises:
        StartupError: a file is missing or unreadable, key and certificate do
            not match, or the key asks for a passphrase.
    """
    if not server.uses_tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        load_certificates(context, server)
    except EncryptedKeyError:
        raise StartupError(
            f"{where}: ssl.key {server.ssl_key} is encrypted with a passphrase, which relay "
            "cannot ask for (a service has no terminal); give it the key decrypted, readable "
            "by relay's user only (openssl pkey -in KEY -out KEY.plain)"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(
            f"{where}: cannot load TLS files (ssl.cert {server.ssl_cert}, ssl.key "
            f"{server.ssl_key}{', ssl.chain ' + server.ssl_chain if server.ssl_chain else ''}): "
            f"{exc.strerror or exc}"
        ) from None
    return context


class EncryptedKeyError(Exception):
    """The private key file asks for a passphrase."""


def _no_passphrase() -> str:
    """OpenSSL's question for an encrypted key's passphrase, refused.

    Without a callback, OpenSSL asks on the terminal: check-config waited
    at the prompt, and serve under systemd failed with "Invalid argument".
    """
    raise EncryptedKeyError


def load_certificates(context: ssl.SSLContext, server: ServerConfig) -> None:
    """Load ``server``'s certificate files into the live ``context`` (renewed certificates).

    New handshakes use the new certificate; established connections keep
    theirs. Check the files first with ``server_context``: a failure here
    leaves the context as it was, but later contexts of a batch unloaded.

    Raises:
        EncryptedKeyError: the key asks for a passphrase (never prompted for).
    """
    assert server.ssl_cert is not None
    assert server.ssl_key is not None
    if server.ssl_chain:
        _load_with_chain(context, server.ssl_cert, server.ssl_chain, server.ssl_key)
    else:
        context.load_cert_chain(server.ssl_cert, server.ssl_key, password=_no_passphrase)


def _load_with_chain(context: ssl.SSLContext, cert: str, chain: str, key: str) -> None:
    # ssl only loads a chain from one file, certificate first; build that file
    # in a private directory that is removed as soon as it has been read.
    pem = Path(cert).read_bytes().rstrip(b"\n") + b"\n" + Path(chain).read_bytes()
    with tempfile.TemporaryDirectory(prefix="relay-tls-") as directory:
        combined = Path(directory) / "fullchain.pem"
        combined.write_bytes(pem)
        context.load_cert_chain(combined, key, password=_no_passphrase)


class ListenerContexts:
    """The TLS contexts of a node's listeners, kept so that a reload renews their certificates."""

    def __init__(self) -> None:
        """Start with no listener."""
        self._live: list[tuple[ssl.SSLContext, ServerConfig, str]] = []

    def context_for(self, server: ServerConfig, where: str) -> ssl.SSLContext | None:
        """A new listener's context (None for plain text), remembered for reloads.

        Raises:
            StartupError: as ``server_context``.
        """
        context = server_context(server, where)
        if context is not None:
            self._live.append((context, server, where))
        return context

    def check(self, servers: Sequence[ServerConfig]) -> None:
        """Read every listener's files again, into throwaway contexts, changing nothing.

        ``servers``: the new config's; a listener whose entry there is the same
        listener still serving TLS reads the files that entry names now.

        Raises:
            StartupError: a file is missing or unreadable, or key and certificate do not match.
        """
        for _, server, where in self._live:
            server_context(_files_now(server, where, servers), where)

    def renew(self, servers: Sequence[ServerConfig]) -> None:
        """Load every listener's certificate files into its live context (after ``check``)."""
        live = []
        for context, server, where in self._live:
            now = _files_now(server, where, servers)
            load_certificates(context, now)
            live.append((context, now, where))
        self._live = live


def _files_now(server: ServerConfig, where: str, servers: Sequence[ServerConfig]) -> ServerConfig:
    """The entry whose TLS files the listener ``where`` (``servers[i]``) loads after a reload.

    Its entry in ``servers`` when it is the same listener, still with TLS (a
    certificate moved to another file); else ``server``, as it started: the
    listener's address and TLS on or off change only with a restart.
    """
    for index, candidate in enumerate(servers):
        if f"servers[{index}]" == where and listener_identity(candidate) == listener_identity(
            server
        ):
            return candidate
    return server


def listener_identity(server: ServerConfig) -> tuple[object, ...]:
    """What a listener is fixed to until a restart: all but its TLS files' paths."""
    return (server.type, server.port, server.listen, server.uses_tls)


def peer_tls_context(name: str, peer: PeerConfig, settings: PeeringConfig) -> ssl.SSLContext | None:
    """The client TLS context for an https peer (None for http); ``name`` is its entry.

    Raises:
        StartupError: the CA file cannot be loaded; names the setting and the file.
    """
    if peer.protocol != "https":
        return None
    setting = f"{name}.ca_file" if peer.ca_file else "peering.ca_file"
    context = client_context(setting, peer.ca_file or settings.ca_file)
    if not peer.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(setting: str, ca_file: str | None) -> ssl.SSLContext:
    """A client TLS context trusting ``ca_file`` (the system's CAs when None).

    Raises:
        StartupError: the CA file cannot be loaded; names ``setting`` and the file.
    """
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise StartupError(f"{setting}: cannot load the CA file {ca_file}: {reason}") from None
