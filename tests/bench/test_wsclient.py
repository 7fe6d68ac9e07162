"""The lean browser's tally: read time and kernel arrival per delivery, from the same frames."""

from __future__ import annotations

import asyncio
import struct

from bench.wsclient import LeanBrowser, Tally, connected_from, subscribe_frame, unique_id

TAG = "abcdefgh"


def _server_frame(seq: int, sent_ns: int) -> bytes:
    """A text frame as relay sends it (unmasked), carrying the bench's uniqueID and stamp."""
    payload = b'{"key":"k","type":"notification","uniqueID":"%s","t":"%020d","touched":[]}' % (
        unique_id(TAG, seq).encode(),
        sent_ns,
    )
    assert len(payload) < 126
    return struct.pack("!BB", 0x81, len(payload)) + payload


def _browser(tally: Tally) -> LeanBrowser:
    browser = LeanBrowser(subscribe_frame(["k"]), TAG, 16, tally, kernel_stamps=True)
    browser._handshaken = True
    return browser


async def test_each_frame_gets_the_read_time_and_the_kernel_stamp_of_its_read() -> None:
    tally = Tally()
    browser = _browser(tally)
    data = _server_frame(0, 1_000) + _server_frame(1, 2_000)
    browser._received(data, now=10_000, arrived=4_000)
    assert list(tally.latencies_ns) == [9_000, 8_000]
    assert list(tally.arrivals_ns) == [3_000, 2_000]
    assert tally.received == 2
    # Only the frame that ended the read is known to have arrived at the stamp.
    assert list(tally.exact_arrivals_ns) == [2_000]


async def test_a_read_that_ends_in_another_frame_or_fills_the_buffer_has_no_exact_stamp() -> None:
    tally = Tally()
    browser = _browser(tally)
    pong = b'{"type":"pong"}'
    browser._received(
        _server_frame(0, 1_000) + struct.pack("!BB", 0x81, len(pong)) + pong,
        now=9_000,
        arrived=4_000,
    )
    # A full read may have left newer bytes of the same stamped segment unread.
    browser._received(_server_frame(1, 2_000), now=9_000, arrived=4_000, drained=False)
    assert list(tally.arrivals_ns) == [3_000, 2_000]
    assert list(tally.exact_arrivals_ns) == []


async def test_without_a_kernel_stamp_only_the_read_time_is_tallied() -> None:
    tally = Tally()
    browser = _browser(tally)
    browser._received(_server_frame(3, 1_000), now=5_000, arrived=0)
    assert list(tally.latencies_ns) == [4_000]
    assert list(tally.arrivals_ns) == []


async def test_a_frame_split_over_two_reads_takes_the_second_reads_times() -> None:
    tally = Tally()
    browser = _browser(tally)
    frame = _server_frame(2, 1_000)
    browser._received(frame[:10], now=2_000, arrived=1_500)
    assert tally.received == 0
    browser._received(frame[10:], now=3_000, arrived=2_500)
    assert list(tally.latencies_ns) == [2_000]
    assert list(tally.arrivals_ns) == [1_500]
    assert list(tally.exact_arrivals_ns) == [1_500]


async def test_a_browser_from_a_source_address_connects_from_it() -> None:
    # The port is left to connect() (IP_BIND_ADDRESS_NO_PORT): the 100k scenario's
    # generators open 100,000 connections from 12 addresses this way.
    peers: list[str] = []
    all_in = asyncio.Event()

    def accepted(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        writer.close()
        if len(peers) == 3:
            all_in.set()

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        socks = [await connected_from(port, "127.0.0.3") for _ in range(3)]
        try:
            assert all(s.getsockname()[0] == "127.0.0.3" for s in socks)
            assert len({s.getsockname()[1] for s in socks}) == 3
            await asyncio.wait_for(all_in.wait(), 5)
        finally:
            for sock in socks:
                sock.close()
    assert peers == ["127.0.0.3"] * 3
