"""Samples as columns (numpy arrays): what a vectorised replay scans instead of Sample objects.

A recording keeps every field of `gateway.model.Sample`: asset, signal, value, quality and
source_ts (the model has no receive time, so nothing is dropped). `asset` and `signal` live once
per key in `Columns.keys`; each sample holds a key index. `value` None is kept apart from a NaN
value by the NO_VALUE bit in `quality`, so `columns_from_samples(xs).samples()` gives back
exactly `xs`: -0.0, ±inf and NaN bit patterns included. (Python compares NaN values by identity:
a NaN comes back as the `math.nan` object when it has its bits, else as a new float, so samples
made with `math.nan` compare equal after the round trip; other NaN objects compare unequal to
anything but themselves, before and after.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.model import Quality, Sample

GOOD, UNCERTAIN, BAD = int(Quality.GOOD), int(Quality.UNCERTAIN), int(Quality.BAD)
NO_VALUE = 4  # bit set in `quality` when Sample.value is None
QUALITY_MASK = 3  # quality & QUALITY_MASK == int(Sample.quality)

_NAN_BITS = np.array([math.nan]).view(np.uint64)[0]
_DTYPES = {"key": np.dtype(np.uint32), "ts": np.dtype(np.float64),
           "value": np.dtype(np.float64), "quality": np.dtype(np.uint8)}


@dataclass(frozen=True, slots=True, eq=False)
class Columns:
    """Samples as arrays, in recorded order (index i of every array is sample i).

    Equality compares keys, warning and the arrays element by element (NaN equals NaN, as two
    Samples holding the same NaN object do). Not hashable: the arrays are mutable.
    """

    keys: tuple[tuple[str, str], ...]  # (asset, signal) per key index, in order of first appearance
    key: npt.NDArray[np.uint32]  # key index per sample
    ts: npt.NDArray[np.float64]  # Sample.source_ts
    value: npt.NDArray[np.float64]  # NaN where Sample.value is None
    quality: npt.NDArray[np.uint8]  # int(Sample.quality) | NO_VALUE when value is None
    warning: str | None = None  # e.g. "recording ends in a cut-off block at byte N; M samples read"

    def __post_init__(self) -> None:
        n = len(self.key)
        for name, dtype in _DTYPES.items():
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != 1:
                raise TypeError(f"Columns.{name} must be a 1-D {dtype} array")
            if len(arr) != n:
                raise ValueError(f"Columns.{name} has {len(arr)} items, Columns.key has {n}")

    def __len__(self) -> int:
        return len(self.key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Columns):
            return NotImplemented
        return (self.keys == other.keys and self.warning == other.warning
                and np.array_equal(self.key, other.key)
                and np.array_equal(self.quality, other.quality)
                and np.array_equal(self.ts, other.ts, equal_nan=True)
                and np.array_equal(self.value, other.value, equal_nan=True))

    __hash__ = None  # type: ignore[assignment]

    def samples(self) -> Iterator[Sample]:
        """Back to Sample objects, in recorded order (value None where NO_VALUE is set)."""
        keys = self.keys
        qualities = tuple(Quality(q & QUALITY_MASK) if q & QUALITY_MASK <= BAD else None
                          for q in range(256))
        chunk = 65_536
        for start in range(0, len(self.key), chunk):
            stop = start + chunk
            chunk_values = self.value[start:stop]
            values = chunk_values.tolist()
            for i in np.flatnonzero(chunk_values.view(np.uint64) == _NAN_BITS).tolist():
                values[i] = math.nan  # the shared object, so Samples made with math.nan compare ==
            for k, ts, value, q in zip(self.key[start:stop].tolist(),
                                       self.ts[start:stop].tolist(), values,
                                       self.quality[start:stop].tolist(), strict=True):
                quality = qualities[q]
                if quality is None:
                    raise ValueError(f"sample {start}: quality {q} is not GOOD, UNCERTAIN or BAD")
                asset, signal = keys[k]
                yield Sample(asset, signal, None if q & NO_VALUE else value, quality, ts)


def columns_from_samples(samples: Iterable[Sample]) -> Columns:
    """Samples to columns; keys are numbered in order of first appearance."""
    index: dict[tuple[str, str], int] = {}
    keys: list[int] = []
    tss: list[float] = []
    values: list[float] = []
    qualities: list[int] = []
    nan = float("nan")
    for s in samples:
        k = (s.asset, s.signal)
        i = index.get(k)
        if i is None:
            i = index[k] = len(index)
        keys.append(i)
        tss.append(s.source_ts)
        if s.value is None:
            values.append(nan)
            qualities.append(int(s.quality) | NO_VALUE)
        else:
            values.append(s.value)
            qualities.append(int(s.quality))
    return Columns(tuple(index), np.array(keys, dtype=np.uint32),
                   np.array(tss, dtype=np.float64), np.array(values, dtype=np.float64),
                   np.array(qualities, dtype=np.uint8))


def empty_columns(warning: str | None = None) -> Columns:
    """No samples, no keys."""
    return Columns((), np.empty(0, np.uint32), np.empty(0, np.float64), np.empty(0, np.float64),
                   np.empty(0, np.uint8), warning)


def concat(parts: Sequence[Columns]) -> Columns:
    """One Columns after the other; keys re-indexed in order of first appearance, order kept.

    Warnings of the parts are joined with "; ".
    """
    index: dict[tuple[str, str], int] = {}
    remapped: list[npt.NDArray[np.uint32]] = []
    for part in parts:
        mapping = np.fromiter((index.setdefault(k, len(index)) for k in part.keys),
                              dtype=np.uint32, count=len(part.keys))
        if np.array_equal(mapping, np.arange(len(part.keys), dtype=np.uint32)):
            remapped.append(part.key)
        else:
            remapped.append(mapping[part.key])
    warnings = [p.warning for p in parts if p.warning]
    return Columns(
        tuple(index),
        np.concatenate(remapped) if remapped else np.empty(0, np.uint32),
        np.concatenate([p.ts for p in parts]) if parts else np.empty(0, np.float64),
        np.concatenate([p.value for p in parts]) if parts else np.empty(0, np.float64),
        np.concatenate([p.quality for p in parts]) if parts else np.empty(0, np.uint8),
        "; ".join(warnings) or None)


def between(cols: Columns, start: float | None = None, end: float | None = None) -> Columns:
    """The samples with start <= ts <= end (either bound open when None), order kept."""
    if start is None and end is None:
        return cols
    keep = np.ones(len(cols), np.bool_)
    if start is not None:
        keep &= cols.ts >= start
    if end is not None:
        keep &= cols.ts <= end
    return Columns(cols.keys, cols.key[keep], cols.ts[keep], cols.value[keep],
                   cols.quality[keep], cols.warning)
