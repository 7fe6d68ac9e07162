"""TLS on both listeners from ssl.key / ssl.cert / ssl.chain, with a throwaway CA."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
import websockets
from cryptography.hazmat.primitives import serialization

from relay.config import PeerConfig, PeeringConfig, parse_config
from relay.config.tls import peer_tls_context, server_context
from relay.errors import StartupError
from relay.node.node import Node
from tests.support import Browser, notification

StartNode = Callable[..., Awaitable[Node]]


@pytest.fixture(scope="module")
def root_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(root_ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    """A leaf certificate signed by an intermediate: browsers need the chain to trust it."""
    intermediate = root_ca.create_child_ca()
    leaf = intermediate.issue_cert("127.0.0.1", "localhost")
    files = {
        "ssl.key": tmp_path / "key.pem",
        "ssl.cert": tmp_path / "cert.pem",
        "ssl.chain": tmp_path / "chain.pem",
    }
    leaf.private_key_pem.write_to_path(str(files["ssl.key"]))
    leaf.cert_chain_pems[0].write_to_path(str(files["ssl.cert"]))
    intermediate.cert_pem.write_to_path(str(files["ssl.chain"]))
    return {name: str(path) for name, path in files.items()}


@pytest.fixture
def client_context(root_ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    root_ca.configure_trust(context)
    return context


def tls_config(tls: dict[str, Any]) -> dict[str, Any]:
    return {
        "servers": [
            {"type": "client", "port": 0, "listen": "127.0.0.1", **tls},
            {"type": "admin", "port": 0, "listen": "127.0.0.1", **tls},
        ]
    }


async def test_both_listeners_serve_tls_with_the_full_chain(
    start_node: StartNode, tls_files: dict[str, str], client_context: ssl.SSLContext
) -> None:
    node = await start_node(tls_config(tls_files))
    client_port, admin_port = node.client_addresses[0][1], node.admin_addresses[0][1]
    ws = await websockets.connect(f"wss://127.0.0.1:{client_port}/~acme/", ssl=client_context)
    browser = Browser(ws)
    await browser.subscribe("A")
    async with aiohttp.ClientSession() as session:
        url = f"https://127.0.0.1:{admin_port}/?instance=acme"
        async with session.post(url, json=notification("A", n=1), ssl=client_context) as r:
            assert r.status == 200
    assert [m["n"] for m in await browser.drain()] == [1]
    await browser.close()


async def test_without_the_chain_browsers_cannot_verify(
    start_node: StartNode, tls_files: dict[str, str], client_context: ssl.SSLContext
) -> None:
    # The control experiment: the same leaf without ssl.chain is not trusted,
    # which shows the chain really is what the first test's browsers received.
    del tls_files["ssl.chain"]
    node = await start_node(tls_config(tls_files))
    with pytest.raises(ssl.SSLCertVerificationError):
        await websockets.connect(
            f"wss://127.0.0.1:{node.client_addresses[0][1]}/", ssl=client_context
        )


async def test_unreadable_tls_files_name_the_entry(
    start_node: StartNode, tls_files: dict[str, str], tmp_path: Path
) -> None:
    tls_files["ssl.cert"] = str(tmp_path / "missing.pem")
    with pytest.raises(StartupError, match=r"servers\[0\]: cannot load TLS files .*missing\.pem"):
        await start_node(tls_config(tls_files))


async def test_reload_serves_a_renewed_certificate(
    start_node: StartNode, root_ca: trustme.CA, tmp_path: Path, client_context: ssl.SSLContext
) -> None:
    first = root_ca.issue_cert("127.0.0.1")
    files = {"ssl.key": str(tmp_path / "key.pem"), "ssl.cert": str(tmp_path / "cert.pem")}
    first.private_key_pem.write_to_path(files["ssl.key"])
    first.cert_chain_pems[0].write_to_path(files["ssl.cert"])
    config = tls_config(files)
    node = await start_node(config)
    port = node.client_addresses[0][1]

    async def served_certificate() -> bytes:
        ws = await websockets.connect(f"wss://127.0.0.1:{port}/", ssl=client_context)
        ssl_object = ws.transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        await ws.close()
        return bytes(der)

    before = await served_certificate()
    renewed = root_ca.issue_cert("127.0.0.1")  # as a renewal puts new files in place
    renewed.private_key_pem.write_to_path(files["ssl.key"])
    renewed.cert_chain_pems[0].write_to_path(files["ssl.cert"])
    assert await node.apply(parse_config(config)) == []
    after = await served_certificate()
    assert before != after
    assert ssl.DER_cert_to_PEM_cert(after).encode() == renewed.cert_chain_pems[0].bytes()


async def test_reload_serves_a_certificate_moved_to_other_files(
    start_node: StartNode, root_ca: trustme.CA, tmp_path: Path, client_context: ssl.SSLContext
) -> None:
    # certbot-style installs name each renewal's files anew; the config follows them.
    paths, pems = {}, {}
    for name in ("first", "renewed"):
        leaf = root_ca.issue_cert("127.0.0.1")
        paths[name] = {
            "ssl.key": str(tmp_path / f"{name}-key.pem"),
            "ssl.cert": str(tmp_path / f"{name}-cert.pem"),
        }
        leaf.private_key_pem.write_to_path(paths[name]["ssl.key"])
        leaf.cert_chain_pems[0].write_to_path(paths[name]["ssl.cert"])
        pems[name] = leaf.cert_chain_pems[0].bytes()
    node = await start_node(tls_config(paths["first"]))
    port = node.client_addresses[0][1]
    assert await node.apply(parse_config(tls_config(paths["renewed"]))) == []
    ws = await websockets.connect(f"wss://127.0.0.1:{port}/", ssl=client_context)
    served = ws.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
    await ws.close()
    assert ssl.DER_cert_to_PEM_cert(served).encode() == pems["renewed"]
    # The files it names are the ones read at the next reload too.
    await asyncio.to_thread(os.remove, paths["first"]["ssl.cert"])
    assert await node.apply(parse_config(tls_config(paths["renewed"]))) == []


def test_a_peer_tls_context_trusts_the_configured_ca_and_verifies_unless_told_not_to(
    root_ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    root_ca.cert_pem.write_to_path(str(ca_file))
    peering = PeeringConfig(ca_file=str(ca_file))
    assert (
        peer_tls_context("cluster[0]", PeerConfig(host="a", port=1, protocol="http"), peering)
        is None
    )
    https = PeerConfig(host="a", port=1, protocol="https")
    verified = peer_tls_context("cluster[0]", https, peering)
    assert verified is not None
    assert (verified.verify_mode, verified.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert len(verified.get_ca_certs()) == 1  # the configured CA, not the system's
    unverified = peer_tls_context(
        "cluster[0]", https.model_copy(update={"tls_verify": False}), peering
    )
    assert unverified is not None
    assert (unverified.verify_mode, unverified.check_hostname) == (ssl.CERT_NONE, False)


def test_an_unreadable_peer_ca_file_names_the_setting_that_gave_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    own = PeerConfig(host="a", port=1, protocol="https", ca_file=missing)
    with pytest.raises(StartupError, match=r"^cluster\[2\]\.ca_file: cannot load the CA file .*"):
        peer_tls_context("cluster[2]", own, PeeringConfig())
    shared = PeerConfig(host="a", port=1, protocol="https")
    with pytest.raises(StartupError, match=r"^peering\.ca_file: cannot load the CA file .*"):
        peer_tls_context("cluster[2]", shared, PeeringConfig(ca_file=missing))


@pytest.mark.parametrize("with_chain", [False, True])
def test_a_key_with_a_passphrase_is_refused_without_a_prompt(
    tls_files: dict[str, str], with_chain: bool
) -> None:
    """OpenSSL would ask on the terminal: check-config waited there, serve failed obscurely."""
    key = serialization.load_pem_private_key(Path(tls_files["ssl.key"]).read_bytes(), None)
    Path(tls_files["ssl.key"]).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"hunter2"),
        )
    )
    files = tls_files if with_chain else {k: v for k, v in tls_files.items() if k != "ssl.chain"}
    server = parse_config(tls_config(files)).servers[0]
    with pytest.raises(StartupError, match="is encrypted with a passphrase") as caught:
        server_context(server, "servers[0]")
    assert str(caught.value).startswith(f"servers[0]: ssl.key {tls_files['ssl.key']} ")
