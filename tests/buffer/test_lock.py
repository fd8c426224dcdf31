"""One daemon per outbox: a second locking opener is refused with the holder's PID; offline
tools open without the lock; the kernel frees the lock when the holder dies, kill -9 included."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from buffer.config import OutboxConfig
from buffer.errors import OutboxError, OutboxLocked, StorageError
from buffer.store import OutboxStore
from tests.buffer.conftest import message

ROOT = Path(__file__).resolve().parents[2]


async def test_second_locking_opener_is_refused_naming_our_pid(db_path: Path) -> None:
    async with await OutboxStore.open(db_path, lock=True) as first:
        with pytest.raises(OutboxLocked) as err:
            await OutboxStore.open(db_path, lock=True)
        assert str(err.value) == (
            f"outbox {db_path} is in use by another PlantBridge (PID {os.getpid()})")
        assert err.value.pid == os.getpid()
        assert isinstance(err.value, OutboxError) and not isinstance(err.value, StorageError)
        # an offline tool (dead-letters) opens without the lock and works beside the daemon
        async with await OutboxStore.open(db_path) as tool:
            assert await tool.commit([], [message("from-tool")]) == 1
            assert await tool.dead_letters() == []
        assert [r.message.key for r in await first.lease("cmms", 10, 2000.0)] == ["from-tool"]
    # closed: the lock is free again
    async with await OutboxStore.open(db_path, lock=True):
        pass


async def test_config_build_passes_the_lock_through(tmp_path: Path) -> None:
    cfg = OutboxConfig()
    async with await cfg.build(tmp_path, lock=True):
        with pytest.raises(OutboxLocked):
            await cfg.build(tmp_path, lock=True)
        async with await cfg.build(tmp_path):  # lock=False by default: offline tools
            pass


def hold_lock(path: Path) -> subprocess.Popen[str]:
    """Start a process that holds the outbox lock; returns once it holds it."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.buffer.lock_holder", str(path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "locked", or "" if the child died
    if line != "locked\n":
        proc.kill()
        raise AssertionError(f"lock holder failed: {proc.communicate(timeout=30)[1]}")
    return proc


def kill_9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


async def test_a_killed_holder_frees_the_lock(db_path: Path) -> None:
    proc = hold_lock(db_path)
    try:
        with pytest.raises(OutboxLocked,
                           match=rf"in use by another PlantBridge \(PID {proc.pid}\)"):
            await OutboxStore.open(db_path, lock=True)
    finally:
        kill_9(proc)
    async with await OutboxStore.open(db_path, lock=True) as store:
        assert store.recovered_from is None
        assert await store.commit([], [message("after-kill")]) == 1
    # the lock file stays (deleting it could let two holders lock different inodes)
    assert (db_path.parent / "outbox.sqlite.lock").read_text() == f"{os.getpid()}\n"


async def test_a_failed_open_releases_the_lock(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    sqlite3.connect(db_path).execute("CREATE TABLE invoices (id INTEGER)").connection.close()
    with pytest.raises(OutboxError, match="not a PlantBridge outbox"):
        await OutboxStore.open(db_path, lock=True)
    async with await OutboxStore.open(db_path.with_name("other.sqlite"), lock=True):
        pass  # a lock of another file is independent
    with pytest.raises(OutboxError, match="not a PlantBridge outbox"):
        await OutboxStore.open(db_path, lock=True)  # not OutboxLocked: the first released it
