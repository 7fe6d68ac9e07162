"""Hosts in URLs: an IPv6 address goes in brackets, names and IPv4 addresses as they are."""

from __future__ import annotations

import pytest

from relay.config import PeerConfig, parse_config
from relay.config.hosts import base_url, url_host
from relay.errors import ConfigError
from tests.support import local_config


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


def test_a_peer_address_in_brackets_is_refused_saying_how_to_write_it() -> None:
    data = local_config(cluster=[{"host": "[::1]", "port": 22281, "protocol": "http"}])
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "test.json")
    assert caught.value.problems == [
        'test.json: cluster[0].host: write the IPv6 address without brackets: "::1"'
    ]


@pytest.mark.parametrize("host", ["http://10.0.0.2", "relay 2", "10.0.0.2:22281", "u@relay2"])
def test_a_peer_host_that_is_no_host_is_refused_at_start(host: str) -> None:
    """It passed, and the link then failed on every try with aiohttp's InvalidUrlClientError."""
    data = local_config(cluster=[{"host": host, "port": 22281, "protocol": "http"}])
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "test.json")
    assert caught.value.problems == [
        f'test.json: cluster[0].host: must be a host name or an IP address alone, not "{host}"'
    ]


@pytest.mark.parametrize("host", ["relay_1", "fe80::1", "relay2.example.com.", "10.0.0.2"])
def test_peer_hosts_aphlict_takes_are_taken(host: str) -> None:
    data = local_config(cluster=[{"host": host, "port": 22281, "protocol": "http"}])
    assert parse_config(data, "test.json").cluster[0].host == host
