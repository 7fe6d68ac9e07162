"""Admission of browser connections: the caps, and the bound on refusals waiting to be answered."""

from __future__ import annotations

from relay.core.admission import MAX_WAITING_REFUSALS, Admission


def test_caps_per_node_and_per_address() -> None:
    admission = Admission(max_total=3, max_per_address=2)
    assert admission.admit("a") is None
    assert admission.admit("a") is None
    assert admission.admit("a") == "this address is at its connection limit"
    assert admission.admit("b") is None
    assert admission.admit("c") == "the node is at its connection limit"
    admission.release("a")
    assert admission.admit("c") is None


def test_refused_connections_wait_for_their_answer_only_so_many_at_once() -> None:
    admission = Admission(max_total=1, max_per_address=0)
    assert all(admission.hold_refusal() for _ in range(MAX_WAITING_REFUSALS))
    assert not admission.hold_refusal()
    admission.drop_refusal()
    assert admission.hold_refusal()
    assert admission.waiting_refusals == MAX_WAITING_REFUSALS
