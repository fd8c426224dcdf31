"""Read and write recorded telemetry as JSON lines or CSV.

JSON lines (what `plantbridge record` writes by default) and CSV hold one sample per line or row:
asset, signal, value, quality, ts, and optionally device_ts. `quality` is GOOD, UNCERTAIN or BAD
(any case) or 0, 1, 2, and defaults to GOOD (BAD when the value is empty); `ts` (the time rules
saw) is seconds since the epoch or an ISO 8601 time; `device_ts` (the device's own time, absent,
null or empty when it gave none) likewise. Readers stream: a recording of a day never sits in
memory.

`.pbrec`, the compact binary format, lives in `rules.pbrec`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.model import Quality, Sample

_QUALITY = {"good": Quality.GOOD, "uncertain": Quality.UNCERTAIN, "bad": Quality.BAD,
            "0": Quality.GOOD, "1": Quality.UNCERTAIN, "2": Quality.BAD}


class RecordingError(ValueError):
    """A recording cannot be read; the message names the file and the line or byte offset."""


def _ts(raw: Any) -> float:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            return datetime.fromisoformat(raw).timestamp()
    raise ValueError(f"ts must be seconds since the epoch or an ISO time, not {raw!r}")


def _value(raw: Any) -> float | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        return float(raw)
    return float(raw)


def _sample(row: dict[str, Any]) -> Sample:
    value = _value(row.get("value"))
    q = row.get("quality")
    if q is None or q == "":
        quality = Quality.GOOD if value is not None else Quality.BAD
    else:
        got = _QUALITY.get(str(q).lower())
        if got is None:
            raise ValueError(f"quality must be GOOD, UNCERTAIN or BAD, not {q!r}")
        quality = got
    asset, signal = row.get("asset"), row.get("signal")
    if not isinstance(asset, str) or not isinstance(signal, str) or not asset or not signal:
        raise ValueError("asset and signal are required text")
    raw_device_ts = row.get("device_ts")
    device_ts = None if raw_device_ts is None or raw_device_ts == "" else _ts(raw_device_ts)
    return Sample(asset, signal, value, quality, _ts(row.get("ts")), device_ts)


def read_jsonl(path: Path) -> Iterator[Sample]:
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("each line must be a JSON object")
                yield _sample(row)
            except (ValueError, TypeError) as exc:
                raise RecordingError(f"{path}:{n}: {exc}") from None


def read_csv(path: Path) -> Iterator[Sample]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"asset", "signal", "value", "ts"} - set(reader.fieldnames or ())
        if missing:
            raise RecordingError(f"{path}:1: the header lacks {', '.join(sorted(missing))}")
        for row in reader:
            try:
                yield _sample(row)
            except (ValueError, TypeError) as exc:
                raise RecordingError(f"{path}:{reader.line_num}: {exc}") from None


def load_recording(path: Path) -> Iterator[Sample]:
    """Samples of a recording, in file order: CSV by the .csv suffix, JSON lines otherwise."""
    path = Path(path)
    return read_csv(path) if path.suffix.lower() == ".csv" else read_jsonl(path)


def each_once(samples: Iterable[Sample]) -> Iterator[Sample]:
    """The samples a live gateway evaluates: one whose device time is not newer than the last
    evaluated of its (asset, signal) is a resend or a redelivery, kept in the recording as
    evidence but skipped, as the gateway's sample gate skips it. Without device times, all."""
    newest: dict[tuple[str, str], float] = {}
    for s in samples:
        dts = s.device_ts
        if dts is not None:
            key = (s.asset, s.signal)
            last = newest.get(key)
            if last is not None and dts <= last:
                continue
            newest[key] = dts
        yield s


def write_jsonl(path: Path, samples: Iterator[Sample] | list[Sample]) -> int:
    """Write samples in the recording format (used by tests and benchmarks)."""
    n = 0
    with path.open("wb") as f:
        for s in samples:
            f.write(orjson.dumps({"asset": s.asset, "signal": s.signal, "value": s.value,
                                  "quality": s.quality.name, "ts": s.source_ts}) + b"\n")
            n += 1
    return n
