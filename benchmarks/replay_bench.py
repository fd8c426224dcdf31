"""The replay figures of `rules_bench.py` (its `--days` and default replay runs): the
benchmark data as columns, written to `.pbrec` an hour at a time, replayed in memory
(`bench_replay`, with checks against the reference replay) or streamed in slabs as
`plantbridge replay` does (`bench_stream`). The data and rules are `rules_bench`'s."""

from __future__ import annotations

import functools
import gc
import math
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from benchmarks.rules_bench import SIGNALS, assets, load, value
from rules.columns import BAD, NO_VALUE, Columns
from rules.fastreplay import replay_columns
from rules.pbrec import RecordingWriter, read_columns, write_columns
from rules.replay import replay
from rules.slabreplay import SLAB_SAMPLES, replay_recording, replay_slabs


def day_columns(names: list[str], seconds: int, t0: float = 1.8e9,
                first_second: int = 0) -> Columns:
    """The samples `samples()` yields, in the same order, built as arrays (from
    `first_second` on: a long recording is built and written an hour at a time)."""
    cycle = 600
    table = _table(len(names))
    n_keys = len(names) * len(SIGNALS)
    key = np.tile(np.arange(n_keys, dtype=np.uint32), seconds)
    second = np.repeat(np.arange(first_second, first_second + seconds, dtype=np.int64), n_keys)
    vals = table[key, second % cycle]
    quality = np.where(np.isnan(vals), BAD | NO_VALUE, 0).astype(np.uint8)
    keys = tuple((a, s) for a in names for s in SIGNALS)
    return Columns(keys, key, t0 + second.astype(np.float64), vals, quality)


@functools.cache
def _table(n_assets: int) -> npt.NDArray[np.float64]:
    return np.array([[math.nan if (x := value(i, signal, t)) is None else x
                      for t in range(600)]
                     for i in range(n_assets) for signal in SIGNALS])


def write_long(path: Path, names: list[str], seconds: int) -> int:
    """Write `seconds` of the benchmark data to `path` an hour at a time (bounded memory)."""
    with RecordingWriter(path) as w:
        for first in range(0, seconds, 3600):
            w.write_columns(day_columns(names, min(3600, seconds - first), first_second=first))
        return w.samples_written


def bench_stream(days: float, n_assets: int = 250, slab_samples: int = SLAB_SAMPLES,
                 keep: Path | None = None) -> dict[str, float]:
    """The replay as `plantbridge replay` runs it: streamed from the file in slabs. The file is
    written once (and kept at `keep`, when given: written only if it is not there yet)."""
    names = assets(n_assets)
    rules = load(None)
    seconds = int(days * 86400)
    out: dict[str, float] = {"signals": n_assets * len(SIGNALS), "hours": days * 24,
                             "samples": seconds * n_assets * len(SIGNALS)}
    with tempfile.TemporaryDirectory(dir=os.environ.get("PB_BENCH_DIR")) as tmp:
        path = keep or Path(tmp) / "long.pbrec"
        if not path.exists():
            start = time.perf_counter()
            write_long(path, names, seconds)
            out["write_seconds"] = time.perf_counter() - start
        out["bytes_per_sample"] = path.stat().st_size / out["samples"]
        _table.cache_clear()
        gc.collect()
        start, cpu = time.perf_counter(), time.process_time()
        result, _ = replay_recording(rules, path, slab_samples=slab_samples)
        out["replay_seconds"] = time.perf_counter() - start
        out["replay_cpu_seconds"] = time.process_time() - cpu
    out["transitions"] = len(result.transitions)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _slice(cols: Columns, a: int, b: int) -> Columns:
    return Columns(cols.keys, cols.key[a:b], cols.ts[a:b], cols.value[a:b], cols.quality[a:b])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_replay(hours: float, n_assets: int = 250, check_hours: float = 0.0,
                 reference: bool = False) -> dict[str, float]:
    names = assets(n_assets)
    rules = load(None)
    seconds = int(hours * 3600)
    cols = day_columns(names, seconds)
    out: dict[str, float] = {"signals": n_assets * len(SIGNALS), "hours": hours,
                             "samples": len(cols)}
    with tempfile.TemporaryDirectory(dir=os.environ.get("PB_BENCH_DIR")) as tmp:
        path = Path(tmp) / "day.pbrec"
        start = time.perf_counter()
        write_columns(path, cols)
        out["write_seconds"] = time.perf_counter() - start
        out["bytes_per_sample"] = path.stat().st_size / len(cols)
        del cols
        gc.collect()
        start = time.perf_counter()
        cols = read_columns(path)
        out["read_seconds"] = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    result = replay_columns(rules, cols)
    out["replay_seconds"] = time.perf_counter() - start
    out["replay_cpu_seconds"] = time.process_time() - cpu
    out["transitions"] = len(result.transitions)
    out["peak_rss_mb"] = peak_rss_mb()
    if check_hours:
        part = day_columns(names, int(check_hours * 3600))
        fast = replay_columns(rules, part).transitions
        slow = replay(rules, part.samples()).transitions
        assert fast == slow, "fast and reference replay differ"
        cuts = range(0, len(part), 100_003)  # slabs of ~100 s: many boundaries, all kinds
        streamed = replay_slabs(rules, (_slice(part, a, a + 100_003) for a in cuts)).transitions
        assert streamed == slow, "streamed and reference replay differ"
        out["checked_transitions"] = len(slow)
    if reference:
        start = time.perf_counter()
        replay(rules, cols.samples())
        out["reference_seconds"] = time.perf_counter() - start
    return out
