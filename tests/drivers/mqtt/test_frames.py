"""The daemon <-> worker pipe protocol: frames round-trip, and anything else is an error."""

from __future__ import annotations

import asyncio
import struct

import msgpack
import pytest

from drivers.mqtt import frames
from gateway.model import Quality, Sample, SourceHealth, SourceState


def reader_of(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


SAMPLES = [Sample("pump-1", "vibration", 7.5, Quality.GOOD, 1.5),
           Sample("pump-2", "current", None, Quality.BAD, 2.0, 1.0),
           Sample("pump-3", "running", 1.0, Quality.UNCERTAIN, 2.5, 2.25)]


async def test_frames_round_trip_and_end_cleanly() -> None:
    cols = frames.columns(SAMPLES)
    reader = reader_of(frames.encode(("b", 7, cols)) + frames.encode(12))
    kind, token, got = await frames.read(reader)
    assert (kind, token) == ("b", 7)
    back = frames.samples_of(got)
    assert back == SAMPLES
    # Real `Sample`s with real `Quality` members: rules compare `quality is Quality.BAD`.
    assert all(type(s) is Sample for s in back)
    assert [s.quality for s in back] == [Quality.GOOD, Quality.BAD, Quality.UNCERTAIN]
    assert all(type(s.quality) is Quality for s in back)
    assert back[1].quality is Quality.BAD
    assert await frames.read(reader) == 12
    assert await frames.read(reader) is None  # the pipe ended between frames: a clean end


def test_an_empty_batch_has_empty_columns() -> None:
    packed = msgpack.unpackb(msgpack.packb(frames.columns([])), use_list=False)
    assert frames.samples_of(packed) == []


@pytest.mark.parametrize("cols, why", [
    ((("a",), ("s",), (1.0,), b"\x00", (1.0,)), "bad sample columns"),  # five columns
    ((("a", "b"), ("s",), (1.0,), b"\x00", (1.0,), (None,)), "bad sample columns"),  # lengths
    ((("a",), ("s",), (1.0,), b"\x07", (1.0,), (None,)), "bad sample columns"),  # quality 7
    ((("a",), ("s",), (1.0,), (0,), (1.0,), (None,)), "qualities must be bytes"),
    (5, "bad sample columns"),
])
def test_bad_columns_are_a_frame_error(cols: object, why: str) -> None:
    with pytest.raises(frames.FrameError, match=why):
        frames.samples_of(cols)


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
