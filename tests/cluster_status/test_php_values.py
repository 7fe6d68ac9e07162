"""JSON values Phorge stores, read leniently and judged as PHP judges them."""

from __future__ import annotations

from typing import Any

import pytest

from relay.cluster_status.verdicts.php_values import (
    decode_json,
    json_number,
    json_object,
    nonempty_text,
    php_truthy,
)


@pytest.mark.parametrize(
    ("text", "truthy"),
    [
        *[("true", True), ('"1"', True), ("1", True), ('"yes"', True), ("[1]", True)],
        *[("false", False), ('"0"', False), ('""', False), ("0", False), ("[]", False)],
        *[("null", False), ("not json", False), (None, False)],
    ],
)
def test_truth_is_phps(text: str | None, truthy: bool) -> None:
    assert php_truthy(decode_json(text)) is truthy


def test_json_objects_and_what_is_not_one() -> None:
    assert json_object('{"userPHID": "PHID-USER-a", "epoch": 5}') == {
        "userPHID": "PHID-USER-a",
        "epoch": 5,
    }
    for text in (None, "", "{broken", "[1, 2]", '"text"'):
        assert json_object(text) == {}


@pytest.mark.parametrize(
    ("value", "text", "number"),
    [
        ("PHID-USER-a", "PHID-USER-a", None),
        ("", None, None),
        (None, None, None),
        (12, None, 12.0),
        (1.5, None, 1.5),
        (True, None, None),  # a JSON boolean is no epoch
        ("12", "12", None),
    ],
)
def test_text_and_numbers_only_when_they_are(
    value: Any, text: str | None, number: float | None
) -> None:
    assert nonempty_text(value) == text
    assert json_number(value) == number
