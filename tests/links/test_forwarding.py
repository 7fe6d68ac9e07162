"""Forwarding: to the peers in a mesh; to the broker, and during a migration to the peers."""

from __future__ import annotations

from relay.links.forwarding import forward_for, posted_here

Call = tuple[str, bytes, frozenset[str]]


def test_a_mesh_node_hands_everything_to_its_peers_as_it_is() -> None:
    to_peers: list[Call] = []

    def peers(instance: str, payload: memoryview, covered: frozenset[str]) -> None:
        to_peers.append((instance, bytes(payload), covered))

    assert forward_for(peers, None) is peers


def test_a_broker_node_publishes_all_and_sends_peers_only_what_was_posted_here() -> None:
    to_peers: list[Call] = []
    published: list[tuple[str, bytes]] = []

    def peers(instance: str, payload: memoryview, covered: frozenset[str]) -> None:
        to_peers.append((instance, bytes(payload), covered))

    def publish(instance: str, payload: memoryview) -> None:
        published.append((instance, bytes(payload)))

    forward = forward_for(peers, publish)
    forward("default", memoryview(b"posted"), frozenset({"me"}))
    forward("default", memoryview(b"from a peer"), frozenset({"peer", "me"}))
    assert published == [("default", b"posted"), ("default", b"from a peer")]
    assert to_peers == [("default", b"posted", frozenset({"me"}))]


def test_only_this_node_in_covered_means_an_application_server_posted_it() -> None:
    assert posted_here(frozenset({"me"}))
    assert not posted_here(frozenset({"me", "a peer"}))
