"""The pipe between the daemon and an MQTT worker process: length-prefixed msgpack frames.

Daemon -> worker (the worker's stdin):
    first  {"config": <MqttSourceConfig as JSON>, "share_group": str | None, "index": int}
    then   token (int): the batch `token` was committed; acknowledge its messages now.
Worker -> daemon (the worker's stdout):
    ("b", token, rows)  one batch; rows are (asset, signal, value, quality, source_ts,
                        device_ts) tuples, `quality` the int of `gateway.model.Quality`
    ("h", *health)      the worker's `SourceHealth` as plain fields (see `health_fields`)

A frame is a 4-byte big-endian length and a msgpack body. Closing the pipe is the only
stop signal: a worker whose stdin ends (the daemon stopped, or died) exits.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgpack

from gateway.model import Quality, SourceHealth, SourceState

_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 256 * 1024 * 1024  # far above any real batch; a bigger length is corruption
QUALITIES = tuple(Quality)  # int -> Quality without an enum call per sample

Row = tuple[str, str, float | None, int, float, float | None]


class FrameError(Exception):
    """The pipe carried something that is not a frame (a bug, or a stray write)."""


def encode(obj: object) -> bytes:
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return _HEADER.pack(len(body)) + body


async def read(reader: asyncio.StreamReader) -> Any:
    """The next frame's object, or None at a clean end of the pipe. Raises FrameError."""
    try:
        head = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise FrameError("the pipe ended inside a frame header") from None
        return None
    (size,) = _HEADER.unpack(head)
    if size > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {size} bytes announced: not a frame")
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise FrameError("the pipe ended inside a frame") from None
    try:
        return msgpack.unpackb(body, use_list=False, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise FrameError(f"undecodable frame: {exc}") from None


def health_fields(h: SourceHealth) -> tuple[object, ...]:
    return (h.state.value, h.detail, h.since, h.samples_total, dict(h.rejected),
            h.clock_skew_seconds, h.clock_note, dict(h.counted))


def health_from(fields: tuple[Any, ...]) -> SourceHealth:
    state, detail, since, samples, rejected, skew, note, counted = fields
    return SourceHealth(SourceState(state), str(detail), float(since), int(samples),
                        dict(rejected), skew, str(note), dict(counted))
