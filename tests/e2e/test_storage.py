"""The outbox file under stress at daemon level: corrupt, too new, and a really full disk."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import Stack, assert_exactly_once, vibration_rule
from tests.harness import wait_for


async def test_corrupt_outbox_is_moved_aside_and_the_daemon_runs(stack: Stack) -> None:
    path = stack.write_config(vibration_rule())
    state = stack.tmp / "state"
    state.mkdir()
    (state / "outbox.sqlite").write_bytes(b"SQLite format 3\x00" + b"\xde\xad" * 4000)
    d = await stack.start_daemon()
    assert list(state.glob("outbox.sqlite.corrupt-*")), "the damaged file is kept for analysis"
    await d.refresh()
    assert any("outbox was damaged" in p for p in d.problems()), d.problems()
    await stack.episode("pump-1")
    await wait_for(lambda: len(stack.sim.status_updates) == 1, 15, "the clear upstream")
    assert len(stack.sim.requests) == 1
    # The problem stays until someone has read it and says so, beside the running daemon.
    ack = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "gateway.cli", "outbox", "acknowledge", "--config", str(path)],
        capture_output=True, text=True, timeout=60)
    assert ack.returncode == 0 and "acknowledged 1 notice" in ack.stdout, ack
    await d.refresh()
    assert not any("outbox was damaged" in p for p in d.problems()), d.problems()


def test_outbox_from_a_newer_version_is_refused_clearly(stack: Stack) -> None:
    path = stack.write_config(vibration_rule())
    state = stack.tmp / "state"
    state.mkdir()
    with contextlib.closing(sqlite3.connect(state / "outbox.sqlite")) as db:
        db.execute("PRAGMA user_version = 999")
        db.execute("CREATE TABLE future (x)")
        db.commit()
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "--config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "schema version 999" in run.stdout + run.stderr
    assert "refusing to start" in run.stdout + run.stderr


@contextlib.contextmanager
def small_filesystem(where: Path, size_kib: int) -> Iterator[Path]:
    where.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(where)],
                       check=True, capture_output=True, timeout=10)
    except (subprocess.CalledProcessError, FileNotFoundError, PermissionError) as exc:
        pytest.skip(f"cannot mount a small tmpfs here ({exc}); the outbox's own tests cover "
                    "a full disk through SQLite's max_page_count")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=10)


def fill(fs: Path) -> Path:
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


async def test_full_disk_holds_everything_and_resumes(stack: Stack) -> None:
    with small_filesystem(stack.tmp / "statefs", 2048) as fs:
        stack.write_config(vibration_rule())
        cfg = stack.tmp / "plantbridge.toml"
        cfg.write_text(cfg.read_text().replace(f'state_dir = "{stack.tmp / "state"}"',
                                               f'state_dir = "{fs}"'))
        d = await stack.start_daemon()
        assert d.pipeline is not None
        filler = fill(fs)
        assets = [f"pump-{i}" for i in range(1, 41)]
        await stack.play_many(assets, [3.0] + [8.0] * 8)
        await wait_for(lambda: d.pipeline is not None and d.pipeline.stats.commit_failures > 0,
                       20, "a commit refused by the full disk")
        assert "full" in d.pipeline.stats.storage_problem
        assert any("cannot write the outbox" in p for p in d.problems())
        assert stack.task is not None and not stack.task.done()  # still running
        filler.unlink()  # space returns
        await wait_for(lambda: len(stack.sim.requests) == len(assets), 30,
                       "every held request delivered once space returned")
        await stack.play_many(assets, [3.0] * 8)
        await wait_for(lambda: len(stack.sim.status_updates) == len(assets), 30, "the clears")
        await stack.settled()
        assert d.pipeline.stats.storage_problem == ""
        assert_exactly_once(stack.sim)
        await stack.stop_daemon()
