"""Messages encoded once: the frame browsers get, and what it costs to keep one."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Generator
from typing import TypeVar

import orjson
from websockets.frames import Frame

from relay.core.encoded import EncodedMessage

T = TypeVar("T")


def test_the_frame_is_an_unmasked_text_frame_of_the_payload() -> None:
    for size in (10, 200, 70_000):  # 7-bit, 16-bit and 64-bit length headers
        payload = orjson.dumps({"pad": "é" * size})
        message = EncodedMessage(payload)
        assert bytes(message.payload) == payload
        frame = _run(Frame.parse(_reader(message.frame), mask=False, max_size=None))
        assert frame.opcode.name == "TEXT"
        assert frame.fin
        assert frame.data == payload


def test_a_retained_message_costs_about_its_size() -> None:
    # orjson's output keeps its 4 KiB+ growth buffer; a retained message must not.
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        kept = [EncodedMessage(orjson.dumps({"n": n, "pad": "x" * 200})) for n in range(1000)]
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(kept) == 1000
    assert (after - before) / 1000 < 400  # ~220 bytes of frame plus the object


def _reader(data: bytes) -> Callable[[int], Generator[None, None, bytes]]:
    """The frame parser of websockets reads through a generator-based read_exact."""
    position = 0

    def read_exact(n: int) -> Generator[None, None, bytes]:
        nonlocal position
        chunk = data[position : position + n]
        position += n
        return chunk
        yield  # pragma: no cover - makes this a generator

    return read_exact


def _run(generator: Generator[None, None, T]) -> T:
    try:
        while True:
            next(generator)
    except StopIteration as done:
        value: T = done.value
        return value
