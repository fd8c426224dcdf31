"""The pipe between the daemon and an MQTT worker process: length-prefixed msgpack frames.

Daemon -> worker (the worker's stdin):
    first  {"config": <MqttSourceConfig as JSON>}
    then   token (int): the batch `token` was committed; acknowledge its messages now.
Worker -> daemon (the worker's stdout):
    ("b", token, cols)  one batch as six columns (see `columns`): assets, signals, values,
                        qualities (bytes, one `gateway.model.Quality` int each), source_ts,
                        device_ts
    ("h", *health)      the worker's `SourceHealth` as plain fields (see `health_fields`)

Why columns: a `Sample` is a named tuple, so the worker turns a batch into columns with one
`zip(*samples)` and the daemon rebuilds the samples with `zip` and `map(tuple.__new__, ...)`:
no Python code runs per sample on either side (building rows field by field, and each
`Sample` one at a time, were most of the pipe's cost). The quality column is bytes, mapped back
to the `Quality` members through a tuple, so rules keep comparing `quality is Quality.BAD`.

A frame is a 4-byte big-endian length and a msgpack body. Closing the pipe is the only
stop signal: a worker whose stdin ends (the daemon stopped, or died) exits.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from typing import Any

import msgpack

from gateway.model import Quality, Sample, SourceHealth, SourceState

_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 256 * 1024 * 1024  # far above any real batch; a bigger length is corruption
QUALITIES = tuple(Quality)  # int -> Quality without an enum call per sample

# assets, signals, values, qualities, source_ts, device_ts: one entry per sample in each.
Columns = tuple[Sequence[str], Sequence[str], Sequence[float | None], bytes, Sequence[float],
                Sequence[float | None]]
_EMPTY: Columns = ((), (), (), b"", (), ())
# `tuple.__new__(Sample, fields)` is what `Sample._make` does, minus a Python call per sample.
_new_sample: Callable[[type[Sample], Iterable[Any]], Sample] = tuple.__new__


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


def columns(samples: Sequence[Sample]) -> Columns:
    """A batch of samples as the six columns of a "b" frame."""
    if not samples:
        return _EMPTY
    assets, signals, values, qualities, source_ts, device_ts = zip(*samples, strict=True)
    return assets, signals, values, bytes(qualities), source_ts, device_ts


def samples_of(cols: Any) -> list[Sample]:
    """The samples of a "b" frame's columns. Raises FrameError for columns of different
    lengths or a quality that is not one of `Quality`."""
    try:
        assets, signals, values, qualities, source_ts, device_ts = cols
        if not isinstance(qualities, bytes):
            raise TypeError(f"qualities must be bytes, got {type(qualities).__name__}")
        fields = zip(assets, signals, values, map(QUALITIES.__getitem__, qualities), source_ts,
                     device_ts, strict=True)
        return list(map(_new_sample, repeat(Sample), fields))
    except (TypeError, ValueError, IndexError) as exc:
        raise FrameError(f"bad sample columns: {exc}") from None


def health_fields(h: SourceHealth) -> tuple[object, ...]:
    return (h.state.value, h.detail, h.since, h.samples_total, dict(h.rejected),
            h.clock_skew_seconds, h.clock_note, dict(h.counted))


def health_from(fields: tuple[Any, ...]) -> SourceHealth:
    state, detail, since, samples, rejected, skew, note, counted = fields
    return SourceHealth(SourceState(state), str(detail), float(since), int(samples),
                        dict(rejected), skew, str(note), dict(counted))
