"""Disk writes of durable rule state: what an edge box's flash sees, per 1,000 signals at 1 Hz.

    .venv/bin/python -m benchmarks --only state-writes

The rules benchmark's plant (every rule kind, 250 assets x 4 signals) runs through a real
`OutboxStore` (`synchronous=FULL`, as the daemon opens it), one commit per simulated second
with what `take_dirty` returned and the sample marks (every sample carries a device time, as
OPC UA and most MQTT payloads do; gateway/dedup.py). After 620 simulated seconds (the 600 s
rate windows full), 60 more are measured: bytes this process sent to the storage device
(`write_bytes` of /proc/self/io: the WAL and the checkpoints into the database file, whole
pages), once with the journal (the daemon's default, rules/journal.py) and once storing every
changed instance at every commit (`state_journal_samples = 0`). A commit per second is the
kindest case for the latter: the daemon commits each group as it comes, often several a second.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.rules_bench import JOURNAL, SIGNALS, assets, load, samples

IO = Path("/proc/self/io")


def written() -> int | None:
    """Bytes this process caused to be sent to storage so far (None: not on this system)."""
    try:
        for line in IO.read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


async def measure(n_assets: int, warm: int, seconds: int, journal: int) -> tuple[float, int]:
    """(bytes written per simulated second, state rows stored per simulated second)."""
    from buffer.store import OutboxStore
    from gateway.dedup import SampleGate
    from gateway.model import Sample
    from rules import RuleEngine

    names = assets(n_assets)
    engine, gate = RuleEngine(load(names), journal_samples=journal), SampleGate()
    per_second = n_assets * len(SIGNALS)
    with tempfile.TemporaryDirectory() as tmp:
        store = await OutboxStore.open(Path(tmp) / "outbox.db")
        try:
            start = rows = 0
            group: list[Sample] = []
            for i, s in enumerate(samples(names, warm + seconds)):
                group.append(s._replace(device_ts=s.source_ts))  # a device time, as usual
                if (i + 1) % per_second:
                    continue
                engine.note_source("plant")  # as the pipeline (gateway/pipeline.py)
                for one in gate.admit_all("plant", group):
                    engine.evaluate(one)
                group = []
                transitions = engine.tick(s.source_ts + 0.5)
                states = engine.take_dirty()
                # marks with a commit of state; with the journal only at its checkpoints
                marks = (gate.changed_marks() if (transitions or states) and engine.checkpointed
                         else [])
                await store.commit(list(transitions), [], states, marks)
                done = (i + 1) // per_second
                if done == warm:
                    start = written() or 0
                elif done > warm:
                    rows += len(states)
            end = written() or 0
        finally:
            await store.close()
    return (end - start) / seconds, rows // seconds


def rows(quick: bool) -> list[Any]:
    from benchmarks.rows import Row

    name = "rule state written to disk, per 1,000 signals at 1 Hz"
    if written() is None:
        return [Row(name, None, "MB/s", "(no target)", None, note="not measured: no "
                    "/proc/self/io on this system")]
    n_assets, warm, seconds = (25, 30, 10) if quick else (250, 620, 60)
    journal, journal_rows = asyncio.run(measure(n_assets, warm, seconds, JOURNAL))
    every, every_rows = asyncio.run(measure(n_assets, warm, seconds, 0))
    scale = 1000 / (n_assets * len(SIGNALS)) / 1e6
    per_day = journal * scale * 86400 / 1e3
    return [Row(name, journal * scale, "MB/s", "(no target: less is longer flash life)", None,
                None,
                f"the journal (default): {journal_rows:,} rows a commit on average, "
                f"{per_day:,.1f} GB a day; every changed instance at every commit "
                f"(state_journal_samples = 0): {every * scale:,.2f} MB/s, {every_rows:,} rows "
                f"a commit, {every * scale * 86400 / 1e3:,.0f} GB a day; one commit per "
                f"simulated second, SQLite synchronous=FULL")]
