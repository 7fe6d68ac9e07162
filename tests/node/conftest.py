"""Fixtures for the node tests: the fake systemd the restart tests start relay under."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.harness.fdstore import FakeSystemd


@pytest.fixture
async def systemd(tmp_path: Path) -> AsyncIterator[FakeSystemd]:
    """The fake systemd; every process it started is killed at the end."""
    fake = FakeSystemd(tmp_path)
    try:
        yield fake
    finally:
        fake.close()
