"""The envelope of relay's own messages, and its unique IDs."""

from __future__ import annotations

import re

from relay.core.envelope import new_message, new_unique_id


def test_unique_ids_are_32_random_letters_and_digits() -> None:
    ids = {new_unique_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9]{32}", i) for i in ids)


def test_messages_are_ordinary_relay_messages() -> None:
    message = new_message("k", "t", {"a": 1}, unique_id="u" * 32)
    assert message == {
        "key": "k",
        "type": "t",
        "subscribers": ["k"],
        "uniqueID": "u" * 32,
        "data": {"a": 1},
    }


def test_a_message_without_data_has_no_data_and_a_fresh_id() -> None:
    message = new_message("PHID-X", "test")
    assert list(message) == ["key", "type", "subscribers", "uniqueID"]
    assert re.fullmatch(r"[A-Za-z0-9]{32}", message["uniqueID"])
