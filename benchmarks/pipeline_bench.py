"""Transition bursts through the pipeline into the outbox, synchronous=FULL, with rule state.

    .venv/bin/python -m benchmarks --only outbox

`Pipeline` (the rule engine, the resend gate, commit grouping) on an `OutboxStore` file, fed
sample batches in which every sample flips its asset's threshold rule (raise, then clear on the
next sample): every sample is a transition and a message to one sink, committed before its
batch is acknowledged (groups of up to 8,000 samples, the next one evaluated while the last one
is written). Rule state as the daemon stores it (`[rules] state_journal_samples`, default):
a journal row of the group's inputs per commit, the changed instances and the sample marks at a
checkpoint (rules/journal.py). The ceiling is plain `sqlite3` doing the same transactions (WAL,
synchronous=FULL): per transition one message row with a ~200-byte body and a unique key and
one episode row; per commit one journal row of the group's samples; at the first commit (a
checkpoint) one rule-state row and one mark per asset.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from benchmarks.rows import Row, rules_from_text
from buffer.store import OutboxStore
from gateway.cli_base import run_async
from gateway.config import RulesConfig
from gateway.model import Quality, Sample, SampleBatch
from gateway.pipeline import Pipeline
from rules import RuleEngine

RULE = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset_pattern = "*"
signal = "vibration"
above = 7.1
clear_below = 6.0
severity = 2
title = "High vibration on {asset}"
"""
BATCH = 500  # samples per batch handed to the pipeline (as a Modbus poll or an MQTT array)


def batches(assets: int, rounds: int) -> list[SampleBatch]:
    """Round r sets every asset above (even r) or below (odd r) the limit: all transitions.
    Stamped an hour ago on: a backlog from a plausible past."""
    t0 = time.time() - 3600
    samples = [Sample(f"pump-{a:05d}", "vibration", 9.0 if r % 2 == 0 else 3.0, Quality.GOOD,
                      t0 + r, t0 + r)
               for r in range(rounds) for a in range(assets)]
    return [SampleBatch(samples[i:i + BATCH]) for i in range(0, len(samples), BATCH)]


async def ours(assets: int, rounds: int, path: Path, site: str = "bench",
               sink: str = "cmms") -> tuple[float, int]:
    """(committed transitions/s, commits) through Pipeline.submit -> run -> OutboxStore at
    `path` (also how the drain benchmark fills a daemon's outbox)."""
    work = batches(assets, rounds)
    want = assets * rounds
    # The input is built up front (100,000 samples for the full run): a daemon never holds
    # that, so keep it out of the collector's full passes, which would scan it again and again.
    gc.freeze()
    async with await OutboxStore.open(path) as store:
        engine = RuleEngine(rules_from_text(RULE),
                            journal_samples=RulesConfig().state_journal_samples)
        pipeline = Pipeline(engine, store, [sink], site, lambda: None)
        done = asyncio.Event()
        # listeners run once per committed transition, after its commit
        pipeline.listeners.append(
            lambda _t: done.set() if pipeline.stats.transitions >= want else None)
        runner = asyncio.create_task(pipeline.run(), name="pipeline")
        start = time.perf_counter()
        for batch in work:
            await pipeline.submit(batch, "bench")
        async with asyncio.timeout(300):  # never reached if a rule refuses assets (its cap)
            await done.wait()
        elapsed = time.perf_counter() - start
        runner.cancel()
        gc.unfreeze()
        if pipeline.stats.evaluation_errors or pipeline.stats.commit_failures:
            raise RuntimeError(f"pipeline trouble: {pipeline.stats}")
        return want / elapsed, pipeline.stats.commits


def bare(assets: int, rounds: int, commits: int, path: Path) -> float:
    """Transitions/s of plain sqlite3 writing the same rows in as many transactions."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript("""
        CREATE TABLE messages (id INTEGER PRIMARY KEY, key TEXT UNIQUE, body BLOB);
        CREATE TABLE episodes (id TEXT PRIMARY KEY, raised_at REAL, cleared_at REAL);
        CREATE TABLE state (rule TEXT, asset TEXT, data BLOB, PRIMARY KEY (rule, asset));
        CREATE TABLE marks (asset TEXT PRIMARY KEY, ts REAL);
    """)
    body = b"x" * 200
    total = assets * rounds
    per_tx = max(1, total // max(1, commits))
    start = time.perf_counter()
    for first in range(0, total, per_tx):
        ids = range(first, min(total, first + per_tx))
        db.execute("BEGIN")
        db.executemany("INSERT OR IGNORE INTO messages (key, body) VALUES (?, ?)",
                       [(f"request:{i}:cmms", body) for i in ids])
        db.executemany("INSERT OR REPLACE INTO episodes VALUES (?, ?, ?)",
                       [(f"ep-{i % assets}", 1.0, None) for i in ids])
        db.execute("INSERT OR REPLACE INTO state VALUES ('*journal', ?, ?)",
                   (str(first), b"s" * (50 * len(ids))))  # the group's samples, packed
        if first == 0:  # the checkpoint at start: every instance and mark
            db.executemany("INSERT OR REPLACE INTO state VALUES ('vib-high', ?, ?)",
                           [(f"pump-{a:05d}", body[:60]) for a in range(assets)])
            db.executemany("INSERT OR REPLACE INTO marks VALUES (?, ?)",
                           [(f"pump-{a:05d}", float(a)) for a in range(assets)])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return total / elapsed


def rows(quick: bool) -> list[Row]:
    # at most 1,000 assets: the engine's default cap of instances per pattern rule
    assets, rounds = (200, 4) if quick else (1_000, 100)
    with tempfile.TemporaryDirectory() as tmp:
        # as the daemon runs: uvloop and its collector thresholds (gateway/cli_base.py)
        value, commits = run_async(ours(assets, rounds, Path(tmp) / "outbox.sqlite"))
        ceiling = bare(assets, rounds, commits, Path(tmp) / "bare.sqlite")
    load = os.getloadavg()[0]  # a shared box shows in the figure: say how busy it was
    return [Row("transition bursts -> outbox, sync=FULL", value, "transitions/s",
                ">= 50,000/s", value >= 50_000, ceiling,
                f"{assets * rounds:,} transitions in {commits} commits; "
                f"ceiling: plain sqlite3, same rows and transactions; load {load:.1f}")]
