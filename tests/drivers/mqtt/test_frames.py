"""The daemon <-> worker pipe protocol: frames round-trip, and anything else is an error."""

from __future__ import annotations

import asyncio
import struct

import msgpack
import pytest

from drivers.mqtt import frames
from gateway.model import SourceHealth, SourceState


def reader_of(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_frames_round_trip_and_end_cleanly() -> None:
    rows = [("pump-1", "vibration", 7.5, 0, 1.5, None), ("pump-2", "current", None, 2, 2.0, 1.0)]
    reader = reader_of(frames.encode(("b", 7, rows)) + frames.encode(12))
    kind, token, got = await frames.read(reader)
    assert (kind, token, [tuple(r) for r in got]) == ("b", 7, rows)
    assert await frames.read(reader) == 12
    assert await frames.read(reader) is None  # the pipe ended between frames: a clean end


@pytest.mark.parametrize("data, why", [
    (b"\x00\x00", "inside a frame header"),
    (struct.pack(">I", 10) + b"abc", "inside a frame"),
    (struct.pack(">I", frames.MAX_FRAME_BYTES + 1), "not a frame"),
    (struct.pack(">I", 1) + b"\xc1", "undecodable"),  # 0xc1 is never valid msgpack
])
async def test_anything_else_is_a_frame_error(data: bytes, why: str) -> None:
    with pytest.raises(frames.FrameError, match=why):
        await frames.read(reader_of(data))


def test_health_crosses_the_pipe_whole() -> None:
    health = SourceHealth(SourceState.DEGRADED, "connected; broker refused a/#", 5.0, 42,
                          {"malformed_json": 3}, -1.5, "clock is behind", {"clock_skew": 2})
    packed = msgpack.unpackb(msgpack.packb(frames.health_fields(health)), use_list=False)
    assert frames.health_from(packed) == health
