"""SIGKILL a process that commits in a loop: every commit is all or nothing, none is lost."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from buffer.store import OutboxStore
from tests.buffer.crash_writer import batch_size

ROOT = Path(__file__).resolve().parents[2]


def run_and_kill(path: Path, first: int, commits: int,
                 mode: str = "commit") -> tuple[int, set[int]]:
    """Start the writer, SIGKILL it right after it reported `commits` commits; returns the
    last batch it reported committed and the record ids it reported settled."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.buffer.crash_writer", str(path),
                             str(first), mode], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    last = first - 1
    settled: set[int] = set()
    deadline = time.monotonic() + 20
    try:
        assert proc.stdout is not None
        while last < first + commits - 1:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"writer died: {proc.stderr.read() if proc.stderr else ''}")
            if line.startswith("settled"):
                settled.update(int(x) for x in line.split()[1:])
            else:
                last = int(line)
            assert time.monotonic() < deadline, "writer too slow"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return last, settled


async def test_sigkill_during_commits_keeps_exactly_whole_commits(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    first = 0
    for _round in range(3):
        reported, _ = run_and_kill(path, first, commits=25)
        async with await OutboxStore.open(path) as store:
            assert store.recovered_from is None
            stats = await store.stats(0.0)
            episodes = sorted(int(e.episode_id[3:]) for e in await store.open_episodes())
            heads = await store.lease("cmms", 10**6, 0.0)  # one per batch: each has its asset
        keys = [r.message.key for r in heads]
        # committed batches form a prefix 0..m with m >= the last one reported
        assert episodes == list(range(len(episodes)))
        m = episodes[-1]
        assert m >= reported
        assert stats.pending == {"cmms": sum(batch_size(i) for i in range(m + 1))}
        # each asset's head is the first record of its batch: nothing half-written
        assert all(re.fullmatch(r"b(\d+)-0", k) for k in keys) and len(keys) == m + 1
        first = m + 1


def pending_ids(path: Path) -> set[int]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM outbox WHERE state = 0")}
    finally:
        conn.close()


async def test_sigkill_while_delivering_never_hands_out_a_settled_record(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    first = 0
    all_settled: set[int] = set()
    for _round in range(3):
        reported, settled = run_and_kill(path, first, commits=20, mode="deliver")
        all_settled |= settled
        async with await OutboxStore.open(path) as store:
            stats = await store.stats(0.0)
            episodes = await store.open_episodes()
        pending = pending_ids(path)
        m = len(episodes) - 1
        assert m >= reported
        committed = sum(batch_size(i) for i in range(m + 1))
        # nothing lost: every committed record is pending or delivered
        assert stats.pending.get("cmms", 0) + stats.delivered.get("cmms", 0) == committed
        # nothing reported as settled is handed out again
        assert stats.delivered.get("cmms", 0) >= len(all_settled)
        assert not pending & all_settled
        first = m + 1
