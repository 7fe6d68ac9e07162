"""Host names and addresses as they stand in a URL."""

from __future__ import annotations


def url_host(host: str) -> str:
    """``host`` for the authority part of a URL: an IPv6 address goes in brackets."""
    return f"[{host}]" if ":" in host else host


def base_url(scheme: str, host: str, port: int) -> str:
    """``scheme://host:port``, the host in brackets when it is an IPv6 address."""
    return f"{scheme}://{url_host(host)}:{port}"
