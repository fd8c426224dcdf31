"""Rule engine throughput: evaluations per second, and replay of a day of 1 Hz data.

    .venv/bin/python benchmarks/rules_bench.py                 # both figures
    .venv/bin/python benchmarks/rules_bench.py --replay-hours 1 # a shorter replay
    .venv/bin/python benchmarks/rules_bench.py --profile        # cProfile of the hot path
        (cProfile adds about a microsecond to every call and charges much of it to the caller:
        `RuleEngine.evaluate` shows several times its real cost, which with every handler
        replaced by an empty function is ~0.17 us a sample; trust the split printed below)
    .venv/bin/python benchmarks/rules_bench.py --skip-replay    # evaluation only
    .venv/bin/python benchmarks/rules_bench.py --days 7         # the week, streamed in slabs

The engine measured is the one the daemon would run: compiled by mypyc where the install could
(rules/native.py), else the Python source; PLANTBRIDGE_PURE_PYTHON=1 measures the latter.

Evaluation: 2,500 assets x 4 signals = 10,000 signals, every rule kind in a realistic mix (a
debounced threshold with hysteresis on every vibration, a rate rule on every temperature, a
count-form band on every current, stale and bad-quality watches, a combination on every pump,
a template with per-asset overrides), one tick per simulated second, one core. Samples are
built before the clock starts: what is timed is `RuleEngine.evaluate` and `tick`, in CPU
seconds of this process (`time.process_time`), so other load on the machine skews it less. The
cyclic collector runs with the daemon's thresholds (`gateway.collector.tune_gc`): at Python's
default it walked the instances' new tuples every 700 objects, a quarter of the figure.
Once per simulated second the changed rule state is collected (`take_dirty`, as the pipeline
does per commit group; `--no-take-dirty` leaves it out), with the daemon's journal (a row of the
group's inputs, and now and then a checkpoint: rules/journal.py): its count is what the outbox
writes.

Replay: 1,000 signals (250 assets x 4) at 1 Hz for a day (86.4 M samples, the same values as
above), written to a `.pbrec` recording and read back, then replayed with
`rules.fastreplay.replay_columns` (what `plantbridge replay` runs). Figures: write, read and
replay in wall-clock seconds, peak RSS. `--check-hours H` also runs the reference replay (every
sample through the engine) on the first H hours and checks both give the same transitions;
`--reference` times the reference replay on the whole span, for comparison. This replay holds
the whole recording in memory (the way before issue 14; 2.4 GB for the day).

`--days D` instead writes D days of the same data an hour at a time (a week: 604.8 M samples,
12.7 GB; `--keep FILE` keeps it for the next run) and replays it as `plantbridge replay` does,
streamed from the file in slabs (`rules.slabreplay.replay_recording`, `--slab-samples`): peak
RSS stays at one slab. The streamed replay is checked against the reference on the first
`--check-hours` of the in-memory run (slabs of ~100 s there, so every rule kind crosses many
slab boundaries).

The suite's rows (`python -m benchmarks --only rules --only replay`): `rows` is the evaluation
figure above (CPU time, with `take_dirty`); `replay_rows` is the issue's target itself, the week
through `plantbridge replay` in a child process (`benchmarks/replay_week.py`).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import math
import pstats
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config import RulesConfig
from gateway.model import Quality, Sample
from rules import RuleEngine, RuleSet, load_rule_files

SIGNALS = ("vibration", "temperature", "current", "running")
JOURNAL = RulesConfig().state_journal_samples  # the daemon's: a journal row per commit
RULES = """
[[rule]]
id = "vibration-high"
kind = "threshold"
asset_pattern = "*"
signal = "vibration"
above = 7.1
clear_below = 6.0
on_delay_seconds = 2
off_delay_seconds = 3
severity = 2
title = "High vibration on {asset}"

[[rule]]
id = "temperature-rising"
kind = "rate"
asset_pattern = "*"
signal = "temperature"
window_seconds = 600
above = 5.0
clear_below = 2.0

[[rule]]
id = "current-band"
kind = "threshold"
asset_pattern = "*"
signal = "current"
outside = [5.0, 20.0]
clear_inside = [6.0, 19.0]
count = 3
of_last_samples = 5

[[rule]]
id = "vibration-silent"
kind = "stale"
asset_pattern = "*"
signal = "vibration"
limit_seconds = 120

[[rule]]
id = "vibration-sensor-failed"
kind = "bad_quality"
asset_pattern = "*"
signal = "vibration"
limit_seconds = 5

[[rule]]
id = "dry-running"
kind = "combination"
asset_pattern = "pump-*"
all_of = [{ signal = "running", equals = 1 }, { signal = "current", below = 5.0 }]
max_age_seconds = 10
on_delay_seconds = 5

[[rule]]
id = "bearing-temperature-high"
kind = "threshold"
asset_pattern = "pump-*"
signal = "temperature"
above = 80.0
clear_below = 75.0
on_delay_seconds = 10
suppress_while = { signal = "running", equals = 0 }

[rule.overrides]
"pump-1" = { above = 90.0, clear_below = 85.0 }
"pump-2" = { above = 85.0, clear_below = 80.0 }
"""


def assets(n: int) -> list[str]:
    return [f"{'pump' if i % 2 else 'fan'}-{i}" for i in range(n)]


def load(known: list[str] | None) -> RuleSet:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.toml"
        path.write_text(RULES)
        return load_rule_files([path], known_assets=known)


def value(asset_no: int, signal: str, t: int) -> float | None:
    """Healthy values with ripple; now and then an excursion (a few % of assets at a time)."""
    phase = (asset_no * 7 + t) % 600
    trouble = asset_no % 37 == t // 600 % 37 and phase > 300
    if signal == "vibration":
        if asset_no % 997 == t % 997 and t % 50 < 8:
            return None  # a flaky sensor now and then
        return (8.5 if trouble else 2.5) + 0.3 * math.sin(t / 7 + asset_no)
    if signal == "temperature":
        return 45.0 + (phase / 30 if trouble else 0.5 * math.sin(t / 11))
    if signal == "current":
        return 12.0 + 0.4 * math.sin(t / 5 + asset_no)
    return 1.0


def samples(names: list[str], seconds: int, t0: float = 1.8e9) -> Iterator[Sample]:
    """Every signal once a second. Values come from a precomputed 10-minute cycle per asset,
    so the generator costs little more than building the Sample objects."""
    good, bad = Quality.GOOD, Quality.BAD
    cycle = 600
    tables = [[[value(i, signal, t) for t in range(cycle)] for signal in SIGNALS]
              for i in range(len(names))]
    for t in range(seconds):
        ts = t0 + t
        phase = t % cycle
        for asset, table in zip(names, tables, strict=True):
            for signal, values in zip(SIGNALS, table, strict=True):
                v = values[phase]
                yield Sample(asset, signal, v, good if v is not None else bad, ts)


def bench_evaluate(n_assets: int = 2500, seconds: int = 60, rounds: int = 5,
                   take_dirty: bool = True, journal: int = JOURNAL) -> dict[str, float]:
    from gateway.collector import tune_gc

    tune_gc()  # the collector as the daemon runs it (a collection every 700 objects skewed this)
    names = assets(n_assets)
    rules = load(names)
    data = list(samples(names, seconds))
    gc.collect()
    gc.freeze()  # the pre-built samples are the benchmark's, not the engine's: do not scan them
    best = best_dirty = math.inf
    transitions = calls = dirty = 0
    clock = time.process_time
    for _ in range(rounds):
        engine = RuleEngine(rules, journal_samples=journal)
        evaluate, tick = engine.evaluate, engine.tick
        per_second = n_assets * len(SIGNALS)
        n = states = 0
        in_dirty = 0.0  # CPU seconds of this round spent in take_dirty
        start = clock()
        for k in range(0, len(data), per_second):
            for s in data[k:k + per_second]:
                got = evaluate(s)
                if got:
                    n += len(got)
            n += len(tick(data[k].source_ts + 0.5))
            if take_dirty:  # what the pipeline does once per commit group (here: per second)
                before = clock()
                states += len(engine.take_dirty())
                in_dirty += clock() - before
        spent = clock() - start
        if spent < best:
            best, best_dirty = spent, in_dirty
        transitions, dirty = n, states
        calls = seconds * sum(  # rule handlers of the routes used (the journal is not one)
            len(engine._routes.get((asset, signal), ()))
            for asset, by in engine._handlers.items() for signal in by)
    return {"signals": n_assets * len(SIGNALS), "samples": len(data), "seconds": best,
            "take_dirty_seconds": best_dirty, "dirty_states": dirty,

            "samples_per_second": len(data) / best, "rule_calls_per_second": calls / best,
            "instances": len(RuleEngine(rules).instances()), "transitions": transitions,
            "dirty_per_second": dirty / seconds}
    # (gc.unfreeze() is not needed: the process ends after the benchmark)


def state_bytes(n_assets: int = 250, seconds: int = 900, warm: int = 600,
                journal: int = JOURNAL) -> float:
    """Untimed, at steady state: kB of msgpack rule state the outbox writes per second (a
    commit per simulated second) once the 600 s rate windows are full (after `warm` s), scaled
    to 10,000 signals; `journal` as the engine's `journal_samples` (0: every changed instance
    at every commit). The timed run is too short to fill them. (Bytes of rows, not of disk
    pages: `python -m benchmarks --only state-writes` measures what reaches the disk.)"""
    import msgpack

    names = assets(n_assets)
    engine, packed = RuleEngine(load(names), journal_samples=journal), 0
    per_second = n_assets * len(SIGNALS)
    for t, s in enumerate(samples(names, seconds)):
        engine.evaluate(s)
        if (t + 1) % per_second:
            continue
        engine.tick(s.source_ts + 0.5)
        states = engine.take_dirty()
        if t < warm * per_second:
            continue
        packed += sum(len(msgpack.packb(state.data)) for state in states
                      if state.data is not None)
    return packed / ((seconds - warm) * 1e3 * (n_assets * len(SIGNALS) / 1e4))


def rows(quick: bool) -> list[Any]:
    """The suite's row (`python -m benchmarks --only rules`): rule evaluations/s on one core
    (CPU time), 10,000 signals in the realistic mix (200 signals briefly with `quick`)."""
    from benchmarks.rows import Row
    from rules import native

    e = (bench_evaluate(50, 5, 1) if quick else bench_evaluate(rounds=3))
    value = e["rule_calls_per_second"]
    return [Row("rule evaluations, realistic mix", value, "evaluations/CPU-s",
                ">= 2,000,000/s", value >= 2_000_000, None,
                f"{e['signals']:,.0f} signals, {e['samples_per_second']:,.0f} samples/CPU-s, "
                f"changed rule state collected once per simulated second "
                f"({e['dirty_per_second']:,.0f} rows a second: a journal row per commit, "
                f"a checkpoint now and then"
                + ("" if quick else f", {state_bytes():,.0f} kB/s to store at steady state")
                + f"); rule engine {native.describe()}; no ceiling (no library does this)")]


def replay_rows(quick: bool) -> list[Any]:
    """The suite's replay row: the week of issue 14 (1 Hz x 1,000 signals) written to a
    `.pbrec` and replayed by `plantbridge replay` in a child process (the slab replay), its
    wall-clock seconds and peak RSS (`benchmarks/replay_week.py`). `quick`: 3 minutes of data
    through the same path (does it run? not a figure)."""
    from benchmarks.replay_week import run_week
    from benchmarks.rows import Row

    hours = 0.05 if quick else 168.0
    name = f"replay {'a week' if hours == 168 else f'{hours:g} h'}, 1 Hz x 1,000 signals"
    r = run_week(hours, RULES)
    if r.problem or r.replay_seconds is None:
        return [Row(name, None, "s", "< 120 s, peak RSS < 1 GB", None,
                    note=f"not measured: {r.problem}")]
    rss = r.peak_rss_mb or 0.0
    written = ("" if r.write_seconds is None
               else f"; the file written first in {r.write_seconds:,.0f} s (not counted)")
    seen = "" if r.replayed == r.samples else f"; REPLAY SAW {r.replayed} samples"
    week = hours == 168
    return [Row(name, r.replay_seconds, "s",
                "< 120 s, peak RSS < 1 GB" if week else "(not the week: no target)",
                (r.replay_seconds < 120 and rss < 1024) if week else None, None,
                f"{r.samples:,.0f} samples by `plantbridge replay` (slab replay) in a child "
                f"process, {r.cpu_seconds or 0:,.0f} CPU s (load average {r.load or 0:.1f} at "
                f"the end); peak RSS is the child's{written}{seen}", rss)]


def main() -> None:
    from benchmarks.replay_bench import bench_replay, bench_stream
    from rules.slabreplay import SLAB_SAMPLES

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replay-hours", type=float, default=24.0)
    p.add_argument("--skip-replay", action="store_true")
    p.add_argument("--skip-evaluate", action="store_true")
    p.add_argument("--check-hours", type=float, default=1.0,
                   help="also compare with the reference replay on this many hours (0: no)")
    p.add_argument("--reference", action="store_true",
                   help="also time the reference replay on the whole span (minutes)")
    p.add_argument("--days", type=float, default=0.0,
                   help="instead: stream this many days from a .pbrec in slabs, as `plantbridge "
                        "replay` does (7: the week of issue 14; 21 bytes a sample on disk)")
    p.add_argument("--slab-samples", type=int, default=SLAB_SAMPLES)
    p.add_argument("--signals", type=int, default=1000, help="with --days: signals (4 an asset)")
    p.add_argument("--keep", type=Path, default=None,
                   help="with --days: the .pbrec to replay, written first if it is not there")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--no-take-dirty", action="store_true",
                   help="evaluate without collecting changed rule state (as before durable state)")
    args = p.parse_args()
    if args.profile:
        cProfile.run("bench_evaluate(rounds=1)", "/tmp/rules_bench.prof")
        pstats.Stats("/tmp/rules_bench.prof").sort_stats("tottime").print_stats(12)
        return
    if args.days:
        r = bench_stream(args.days, args.signals // len(SIGNALS), args.slab_samples, args.keep)
        written = (f"written in {r['write_seconds']:.1f} s, " if "write_seconds" in r else "")
        print(f"streamed replay: {r['signals']:,} signals at 1 Hz for {r['hours']:g} h = "
              f"{r['samples']:,.0f} samples; .pbrec {r['bytes_per_sample']:.1f} bytes/sample, "
              f"{written}replayed from the file in slabs of {args.slab_samples:,} samples in "
              f"{r['replay_seconds']:.1f} s ({r['replay_cpu_seconds']:.1f} CPU s, "
              f"{r['samples'] / r['replay_seconds']:,.0f} samples/s), "
              f"{r['transitions']:,.0f} transitions; peak RSS {r['peak_rss_mb']:,.0f} MB")
        return
    if not args.skip_evaluate:
        e = bench_evaluate(take_dirty=not args.no_take_dirty)
        print(f"evaluate: {e['signals']:,} signals, {e['instances']:,} rule instances, "
              f"{e['samples']:,} samples in {e['seconds']:.2f} s -> "
              f"{e['samples_per_second']:,.0f} samples/s ({e['rule_calls_per_second']:,.0f} rule "
              f"evaluations/s), {e['transitions']} transitions; "
              f"{e['dirty_per_second']:,.0f} rule state rows to store per second (a journal "
              f"row per commit, a checkpoint now and then)")
        if not args.no_take_dirty:
            print(f"  rule state to store at steady state (full 600 s rate windows), scaled to "
                  f"10,000 signals: {state_bytes():,.0f} kB/s of msgpack (without the journal, "
                  f"every changed instance at every commit: {state_bytes(journal=0):,.0f} kB/s)")
        if not args.no_take_dirty:
            rest = e["seconds"] - e["take_dirty_seconds"]
            print(f"  of which take_dirty {e['take_dirty_seconds']:.2f} s "
                  f"({e['take_dirty_seconds'] / max(1, e['dirty_states']) * 1e6:.2f} us a "
                  f"state), evaluate and tick {rest:.2f} s "
                  f"({e['rule_calls_per_second'] * e['seconds'] / rest:,.0f} rule "
                  f"evaluations per CPU-second without them)")
    if not args.skip_replay:
        r = bench_replay(args.replay_hours, check_hours=args.check_hours,
                         reference=args.reference)
        print(f"replay: {r['signals']:,} signals at 1 Hz for {r['hours']:g} h = "
              f"{r['samples']:,.0f} samples; .pbrec {r['bytes_per_sample']:.1f} bytes/sample, "
              f"written in {r['write_seconds']:.1f} s, read in {r['read_seconds']:.1f} s; "
              f"replayed in {r['replay_seconds']:.1f} s ({r['replay_cpu_seconds']:.1f} CPU s, "
              f"{r['samples'] / r['replay_seconds']:,.0f} samples/s), "
              f"{r['transitions']:,.0f} transitions; peak RSS {r['peak_rss_mb']:,.0f} MB")
        if "checked_transitions" in r:
            print(f"check: the first {args.check_hours:g} h give the same "
                  f"{r['checked_transitions']:,.0f} transitions as the reference replay")
        if "reference_seconds" in r:
            print(f"reference replay (every sample through the engine): "
                  f"{r['reference_seconds']:.1f} s")


if __name__ == "__main__":
    main()
