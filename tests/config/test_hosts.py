"""Hosts in URLs: an IPv6 address goes in brackets, names and IPv4 addresses as they are."""

from __future__ import annotations

import pytest

from relay.config import PeerConfig
from relay.config.hosts import base_url, url_host


@pytest.mark.parametrize(
    ("host", "expected"),
    [("relay1.example.com", "relay1.example.com"), ("10.0.0.2", "10.0.0.2"), ("::1", "[::1]")],
)
def test_url_host_brackets_ipv6_only(host: str, expected: str) -> None:
    assert url_host(host) == expected
    assert base_url("https", host, 22281) == f"https://{expected}:22281"


def test_a_peer_url_is_what_aiohttp_can_request() -> None:
    assert PeerConfig(host="::1", port=22281, protocol="http").url == "http://[::1]:22281"
    assert PeerConfig(host="relay2", port=443, protocol="https").url == "https://relay2:443"
