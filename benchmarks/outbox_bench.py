"""Outbox throughput: commit rows/s by transaction size and durability, and the drain rate.

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

from buffer.store import OutboxStore, Synchronous
from gateway.model import (
    Delivery,
    MessageKind,
    OutboxMessage,
    Outcome,
)


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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the row counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    args = parser.parse_args()
    asyncio.run(main(args.scale, args.repeat))
