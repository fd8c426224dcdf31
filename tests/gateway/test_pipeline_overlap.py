"""Evaluation overlaps the commit, and every promise holds: a group is evaluated while the one
before it is being written, at most `commit_depth` groups run ahead of the file, batches are
acknowledged only after the commit that holds what they caused and in their order, and a
failing commit (a full disk, a file held by another writer) loses nothing and acknowledges
nothing behind it. Real SQLite outbox; a commit is held up by a second connection that owns
the file's write lock, or refused by a real SQLITE_FULL (`max_page_count`)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from buffer.store import OutboxStore
from gateway.model import Quality, Sample, SampleBatch
from gateway.pipeline import Pipeline
from rules import RuleEngine, load_rule_files
from tests.harness import wait_for

T0 = 1_780_000_000.0
RULE = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset_pattern = "pump-*"
signal = "vibration"
above = 7.1
clear_below = 6.0
severity = 2
title = "High vibration on {asset}"
"""


def batch(values: list[float], acked: list[str], name: str, at: float,
          assets: int = 1) -> SampleBatch:
    """Every asset pump-0..pump-N reads each value in turn (device time `at`, `at` + 1, ...)."""
    samples = [Sample(f"pump-{a}", "vibration", v, Quality.GOOD, at + i, at + i)
               for i, v in enumerate(values) for a in range(assets)]
    return SampleBatch(samples, lambda: acked.append(name))


@dataclass
class Rig:
    path: Path
    outbox: OutboxStore
    pipeline: Pipeline
    seen: list[Sample] = field(default_factory=list)  # samples evaluated, in order
    acked: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, *, commit_depth: int = 2, max_group: int = 4000,
              gil_switch_seconds: float | None = None) -> AsyncIterator[Rig]:
    (tmp_path / "r.toml").write_text(RULE)
    engine = RuleEngine(load_rule_files([tmp_path / "r.toml"]))
    path = tmp_path / "o.sqlite"
    async with await OutboxStore.open(path) as outbox:
        pipeline = Pipeline(engine, outbox, ["cmms"], "site", lambda: None,
                            commit_depth=commit_depth, max_group=max_group,
                            gil_switch_seconds=gil_switch_seconds)
        r = Rig(path, outbox, pipeline)
        pipeline.sample_listeners.append(r.seen.append)
        runner = asyncio.create_task(pipeline.run(), name="pipeline")
        try:
            yield r
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)


@contextlib.contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Another connection holds the outbox's write lock: our commits wait (busy timeout),
    fail with "database is locked" and are retried, until it lets go."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def stored(path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_groups_run_ahead_of_the_file_up_to_the_depth_and_ack_in_order(
        tmp_path: Path, depth: int) -> None:
    async with rig(tmp_path, commit_depth=depth, max_group=1) as r:  # a group per batch
        with write_lock_held(r.path):
            # raise, clear, raise, clear, raise: each batch its own group and transition
            for i in range(5):
                await r.pipeline.submit(
                    batch([9.0 if i % 2 == 0 else 3.0], r.acked, f"b{i}", T0 + 10 * i), "src")
            # the first `depth` groups were taken and evaluated while the first commit waits
            # for the file; the evaluator waits for that commit before it takes another
            await wait_for(lambda: r.pipeline.backlog == 5 - depth, 10, "groups taken")
            await asyncio.sleep(0.2)  # time enough to run further ahead, were it allowed to
            assert r.pipeline.backlog == 5 - depth
            assert len(r.seen) == depth
            assert r.acked == [] and r.pipeline.stats.transitions == 0
        await wait_for(lambda: len(r.acked) == 5, 20, "every batch acknowledged")
        assert r.acked == ["b0", "b1", "b2", "b3", "b4"]
        assert r.pipeline.stats.commits == 5 and r.pipeline.stats.transitions == 5
    # each transition in its own commit, in order: raise, clear, raise, clear, raise
    kinds = stored(r.path, "SELECT kind FROM outbox ORDER BY id")
    assert [k for (k,) in kinds] == ["maintenance_request", "status_update"] * 2 + [
        "maintenance_request"]
    assert stored(r.path, "SELECT count(*) FROM episodes WHERE cleared_at IS NULL") == [(1,)]


async def test_a_failing_commit_holds_back_every_group_behind_it_and_loses_nothing(
        tmp_path: Path) -> None:
    assets = 50
    async with rig(tmp_path, max_group=1) as r:
        # the file may not grow: any commit of new rows fails with a real SQLITE_FULL
        pages = (await r.outbox._read("PRAGMA page_count"))[0][0]
        await r.outbox._db.execute(f"PRAGMA max_page_count = {pages}")
        await r.pipeline.submit(batch([9.0], r.acked, "raise", T0, assets), "src")
        await wait_for(lambda: r.pipeline.stats.commit_failures >= 2, 20, "failing commits")
        assert "full" in r.pipeline.stats.storage_problem
        # the next group (the clears) is evaluated meanwhile, and waits behind the first
        await r.pipeline.submit(batch([3.0], r.acked, "clear", T0 + 10, assets), "src")
        await wait_for(lambda: len(r.seen) == 2 * assets, 10, "the clears evaluated")
        assert r.acked == [] and r.pipeline.stats.transitions == 0
        assert await r.outbox.open_episodes() == []
        await r.outbox._db.execute("PRAGMA max_page_count = 1073741823")  # space returns
        await wait_for(lambda: r.acked == ["raise", "clear"], 30, "both acknowledged")
        assert r.pipeline.stats.storage_problem == ""
        assert (r.pipeline.stats.raised, r.pipeline.stats.cleared) == (assets, assets)
    # every raise and its clear are stored, the raise first
    rows = stored(r.path, "SELECT asset, kind FROM outbox ORDER BY id")
    for a in range(assets):
        assert [k for asset, k in rows if asset == f"pump-{a}"] == [
            "maintenance_request", "status_update"]
    assert stored(r.path, "SELECT count(*) FROM episodes WHERE cleared_at IS NULL") == [(0,)]
    assert stored(r.path, "SELECT count(*) FROM episodes") == [(assets,)]


async def test_apply_waits_its_turn_behind_groups_being_committed(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        with write_lock_held(r.path):
            await r.pipeline.submit(batch([9.0], r.acked, "raise", T0), "src")
            await wait_for(lambda: len(r.seen) == 1, 10, "the raise evaluated")
            # a reload closes the rule's episode: committed after the raise, never before
            async with r.pipeline.lock:
                closing = r.pipeline.engine.replace(load_rule_files([]), T0 + 5)
            assert [t.kind for t in closing] == ["cleared"]
            applied = asyncio.create_task(r.pipeline.apply(closing))
            await asyncio.sleep(0.1)
            assert not applied.done() and r.acked == []
        await asyncio.wait_for(applied, 20)
        assert r.acked == ["raise"]
    kinds = stored(r.path, "SELECT kind FROM outbox ORDER BY id")
    assert [k for (k,) in kinds] == ["maintenance_request", "status_update"]
    assert stored(r.path, "SELECT count(*) FROM episodes WHERE cleared_at IS NULL") == [(0,)]


def test_commit_depth_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="commit_depth"):
        Pipeline(RuleEngine(load_rule_files([])), None,  # type: ignore[arg-type]
                 [], "site", lambda: None, commit_depth=0)


async def test_the_gil_switch_interval_is_short_while_it_runs_and_restored_after(
        tmp_path: Path) -> None:
    before = sys.getswitchinterval()
    async with rig(tmp_path, gil_switch_seconds=0.0002) as r:
        await r.pipeline.submit(batch([9.0], r.acked, "raise", T0), "src")
        await wait_for(lambda: r.acked == ["raise"], 10, "the raise acknowledged")
        assert sys.getswitchinterval() == pytest.approx(0.0002)
    assert sys.getswitchinterval() == before
