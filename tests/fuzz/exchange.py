"""Play one case on a raw socket, and judge what came back.

Every wait is bounded: a case costs at most a few seconds whatever the node
does. What counts against the node here: a 5xx other than the documented
ones (501 "Use Websockets" to plain HTTP on the client port, 505 to a
version other than HTTP/1.1) and a close frame with code 1011.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time

from tests.fuzz.cases import Case
from tests.fuzz.wire import Answer, answer_complete, read_close_codes, read_statuses

#: How long the node has to answer a handshake before the frames are sent anyway.
HANDSHAKE_WAIT = 2.0
#: How long the node has to answer and close after the fuzzer half-closes.
CLOSE_WAIT = 5.0
#: How long a case that leaves its connection open reads before giving up.
LINGER_WAIT = 0.5
#: Most bytes read back from one connection (a replay may send a lot).
READ_LIMIT = 4 * 1024 * 1024


async def play(case: Case, port: int) -> Answer:
    """Send ``case`` to ``port`` on 127.0.0.1 and read what the node sends back."""
    answer = Answer()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        answer.closed = True
        return answer
    try:
        await _send(case, reader, writer, answer)
        if case.ending == "reset":
            _reset(writer)
        else:
            if case.ending == "half-close":
                with contextlib.suppress(OSError):
                    writer.write_eof()
            wait = CLOSE_WAIT if case.ending == "half-close" else LINGER_WAIT
            await _read(reader, answer, wait, stop_when_answered=case.ending == "linger")
    except OSError:
        answer.closed = True
    finally:
        writer.transport.abort()
    answer.statuses = read_statuses(answer.raw)
    answer.close_codes = read_close_codes(answer.raw) if case.port == "client" else []
    return answer


async def _send(
    case: Case, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: Answer
) -> None:
    """Write the chunks; on the client port, the frames only after the handshake's answer."""
    for index, chunk in enumerate(case.chunks):
        writer.write(chunk)
        try:
            await writer.drain()
        except OSError:
            answer.closed = True
            return
        if index == 0 and case.port == "client":
            await _read(reader, answer, HANDSHAKE_WAIT, until=b"\r\n\r\n")
            if answer.closed:
                return


async def _read(
    reader: asyncio.StreamReader,
    answer: Answer,
    wait: float,
    *,
    until: bytes | None = None,
    stop_when_answered: bool = False,
) -> None:
    """Read into ``answer`` until EOF, ``until`` is seen, or ``wait`` seconds pass."""
    deadline = time.monotonic() + wait
    while len(answer.raw) < READ_LIMIT:
        if until is not None and until in answer.raw:
            return
        if stop_when_answered and answer_complete(answer.raw):
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            async with asyncio.timeout(remaining):
                piece = await reader.read(65536)
        except TimeoutError:
            return
        except OSError:
            answer.closed = True
            return
        if not piece:
            answer.closed = True
            return
        answer.raw += piece


def _reset(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with a TCP reset, as a crashed client would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def allowed_5xx(case: Case, answer: Answer, status: int) -> bool:
    """Whether ``status`` is one of the documented 5xx answers to this case."""
    first_line = case.chunks[0].split(b"\r\n", 1)[0] if case.chunks else b""
    if status == 505:
        return not first_line.endswith(b" HTTP/1.1")
    return status == 501 and case.port == "client" and b"HTTP/501 Use Websockets" in answer.raw


def judge(case: Case, answer: Answer) -> list[str]:
    """What in ``answer`` counts against the node (an empty list when nothing)."""
    problems = [
        f"answered {status}"
        for status in answer.statuses
        if status >= 500 and not allowed_5xx(case, answer, status)
    ]
    if 1011 in answer.close_codes:
        problems.append("closed with 1011")
    return problems
