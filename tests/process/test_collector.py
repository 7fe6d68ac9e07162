"""Start-up's objects frozen out of the cyclic garbage collector, in a node that started."""

from __future__ import annotations

import asyncio
import gc
import re
import signal
import weakref
from pathlib import Path

import orjson

from relay.process.collector import freeze_startup_objects
from tests.support import RelayProcess, local_config


class _Node:
    """A container the collector tracks, able to sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: object = None


def test_garbage_is_collected_first_and_what_lives_is_frozen() -> None:
    cycle = _Node()
    cycle.other = cycle  # garbage only the cyclic collector can free
    gone = weakref.ref(cycle)
    del cycle
    kept = _Node()
    try:
        frozen = freeze_startup_objects()
        assert frozen == gc.get_freeze_count() > 0
        assert gone() is None  # freed, not frozen for ever
        # Frozen objects are in no generation the collector scans; later ones are.
        later = _Node()
        tracked = {id(obj) for obj in gc.get_objects()}
        assert id(kept) not in tracked
        assert id(later) in tracked
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual


async def test_a_started_node_froze_its_start_up_objects(tmp_path: Path) -> None:
    path = tmp_path / "relay.json"
    path.write_bytes(orjson.dumps(local_config()))
    node = RelayProcess(path, ["--debug"])
    await asyncio.to_thread(node.start)
    node.signal(signal.SIGTERM)
    code, output = await asyncio.to_thread(node.wait)
    assert code == 0, output
    froze = re.search(r"froze (\d+) objects of start-up", output)
    assert froze is not None, output
    # A node's modules, classes and parts are tens of thousands of objects.
    assert int(froze.group(1)) > 10_000
