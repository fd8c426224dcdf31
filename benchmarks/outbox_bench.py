"""Outbox throughput: commit rows/s by transaction size and durability, the drain rate, and
the cost of durable rule state at 50,000 samples/s.

    .venv/bin/python benchmarks/outbox_bench.py [--scale 1.0] [--repeat 3]

Each figure is the median of `--repeat` runs, each on a fresh file in a temporary directory
(on the disk that holds /tmp unless TMPDIR says otherwise): compare options with it, do not
treat it as a target.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgpack

from buffer.store import OutboxStore, Synchronous
from gateway.model import (
    Delivery,
    MessageKind,
    OutboxMessage,
    Outcome,
    RuleState,
    SampleMark,
)

SAMPLES_PER_S = 50_000
SAMPLES_PER_GROUP = 2_000  # one commit per group: 25 commits/s
INSTANCES = 20_000  # rule instances (and signals) a group's changes are drawn from


def make(i: int, assets: int) -> OutboxMessage:
    """A message with a ~200-byte msgpack body, like a maintenance request."""
    asset = f"line-4/pump-{i % assets:04d}"
    return OutboxMessage(
        key=f"request:PB{i:018d}:cmms", sink="cmms", asset=asset, episode_id=f"ep-{i}",
        kind=MessageKind.MAINTENANCE_REQUEST,
        body={"site": "plant-7", "asset": asset, "rule_id": "vibration-high", "severity": 2,
              "value": 7.41, "title": "Vibration above limit on pump", "priority": 2,
              "raised_at": "2026-11-27T07:31:08.123Z", "reason": "vibration 7.4 above 7.1"},
        created_at=1_700_000_000.0 + i)


async def commit_rate(sync: Synchronous, per_tx: int, total: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        async with await OutboxStore.open(Path(d) / "bench.sqlite", synchronous=sync) as store:
            batches = [[make(b * per_tx + j, 1000) for j in range(per_tx)]
                       for b in range(total // per_tx)]
            start = time.perf_counter()
            for batch in batches:
                await store.commit([], batch)
            return total / (time.perf_counter() - start)


async def drain_rate(total: int, assets: int, lease_limit: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        async with await OutboxStore.open(Path(d) / "bench.sqlite") as store:
            for b in range(0, total, 1000):
                await store.commit([], [make(i, assets) for i in range(b, min(total, b + 1000))])
            start = time.perf_counter()
            done = 0
            while recs := await store.lease("cmms", lease_limit, 2e9):
                await store.settle([Delivery(r.id, Outcome.ACCEPTED, receipt="SR-1")
                                    for r in recs], 2e9)
                done += len(recs)
            elapsed = time.perf_counter() - start
            assert done == total, (done, total)
            return total / elapsed


def rule_state(i: int, t: float) -> RuleState:
    """A ~60-byte state: an on-delay running, an N-of-M window, last value and last seen."""
    return RuleState(rule_id=f"rule-{i % 40:02d}", asset=f"line-4/pump-{i // 40:04d}",
                     fingerprint="3f9a0c1d", data={"on_since": t - 1.5, "win": [1, 0, 1, 1, 0],
                                                   "last": 7.41, "seen": t})


async def state_cost(dirty: int, marks: int, groups: int) -> tuple[float, float]:
    """Commit `groups` state-only commits, each changing `dirty` rule states and `marks` sample
    marks (synchronous=full); returns (wall seconds, process CPU seconds) per commit."""
    with tempfile.TemporaryDirectory() as d:
        async with await OutboxStore.open(Path(d) / "bench.sqlite") as store:
            t = 1.7e9
            # every instance has a row already: steady state is an update, not an insert
            await store.commit([], [], [rule_state(i, t) for i in range(INSTANCES)],
                               [SampleMark("plc", f"a{i}", "vib", t) for i in range(INSTANCES)])
            start, cpu = time.perf_counter(), time.process_time()
            for g in range(groups):
                t += SAMPLES_PER_GROUP / SAMPLES_PER_S
                first = g * max(dirty, marks)
                await store.commit(
                    [], [], [rule_state((first + j) % INSTANCES, t) for j in range(dirty)],
                    [SampleMark("plc", f"a{(first + j) % INSTANCES}", "vib", t)
                     for j in range(marks)])
            return ((time.perf_counter() - start) / groups,
                    (time.process_time() - cpu) / groups)


async def state_table(scale: float, repeat: int) -> None:
    rate = SAMPLES_PER_S / SAMPLES_PER_GROUP
    blob = len(msgpack.packb(rule_state(0, 1.7e9).data))
    print(f"rule state at {SAMPLES_PER_S:,} samples/s in groups of {SAMPLES_PER_GROUP:,} "
          f"({rate:.0f} commits/s), synchronous=full, {blob}-byte state blobs")
    print(f"| {'states/commit':>13} | {'marks/commit':>12} | {'ms/commit':>9} "
          f"| {'commits/s':>9} | {'busy at 25/s':>12} | {'CPU at 25/s':>11} |")
    print(f"|{'-' * 14}:|{'-' * 13}:|{'-' * 10}:|{'-' * 10}:|{'-' * 13}:|{'-' * 12}:|")
    groups = max(10, int(100 * scale))
    for dirty, marks in ((0, 0), (10, 10), (100, 100), (1000, 1000), (1000, 2000)):
        runs = [await state_cost(dirty, marks, groups) for _ in range(repeat)]
        wall = median(r[0] for r in runs)
        cpu = median(r[1] for r in runs)
        print(f"| {dirty:>13} | {marks:>12} | {wall * 1e3:>9.2f} | {1 / wall:>9,.0f} "
              f"| {wall * rate:>11.1%} | {cpu * rate:>10.1%} |", flush=True)


async def main(scale: float, repeat: int) -> None:
    print("commit (WAL, ~200-byte msgpack body, unique text key)")
    print(f"| {'synchronous':<11} | {'rows/tx':>7} | {'rows':>7} | {'rows/s':>9} |")
    print(f"|{'-' * 13}|{'-' * 8}:|{'-' * 8}:|{'-' * 10}:|")
    for sync in (Synchronous.FULL, Synchronous.NORMAL):
        for per_tx, total in ((1, 2_000), (100, 20_000), (1000, 50_000)):
            n = max(per_tx, int(total * scale) // per_tx * per_tx)
            rate = median([await commit_rate(sync, per_tx, n) for _ in range(repeat)])
            print(f"| {sync.value:<11} | {per_tx:>7} | {n:>7} | {rate:>9,.0f} |", flush=True)
    print()
    print("drain (lease + settle ACCEPTED with a receipt, synchronous=full)")
    print(f"| {'assets':>6} | {'lease limit':>11} | {'rows':>7} | {'rows/s':>9} |")
    print(f"|{'-' * 7}:|{'-' * 12}:|{'-' * 8}:|{'-' * 10}:|")
    for assets, limit, total in ((1000, 500, 20_000), (100, 500, 20_000), (1, 500, 2_000)):
        n = max(limit, int(total * scale))
        rate = median([await drain_rate(n, assets, limit) for _ in range(repeat)])
        print(f"| {assets:>6} | {limit:>11} | {n:>7} | {rate:>9,.0f} |", flush=True)
    print()
    await state_table(scale, repeat)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the row counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--state-only", action="store_true",
                        help="only the rule-state table")
    args = parser.parse_args()
    asyncio.run(state_table(args.scale, args.repeat) if args.state_only
                else main(args.scale, args.repeat))
