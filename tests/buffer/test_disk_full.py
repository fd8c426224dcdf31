"""A full disk during commit rolls back cleanly, raises StorageFull, and the store recovers."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from buffer.errors import StorageFull
from buffer.store import OutboxStore
from gateway.model import Delivery, Outcome, TransitionKind
from tests.buffer.conftest import message, pragma, transition

BIG = [message(f"big{i}", asset=f"a{i}", body={"pad": "z" * 4000}) for i in range(40)]


async def test_page_limit_full_rolls_back_and_store_stays_usable(db_path: Path) -> None:
    async with await OutboxStore.open(db_path) as store:
        await store.commit([], [message("keep")])
        pages = await pragma(store, "page_count")
        await store._db.execute(f"PRAGMA max_page_count = {pages + 2}")
        before = await store.stats(0.0)
        with pytest.raises(StorageFull, match=f"{db_path}.*disk is full"):
            await store.commit([transition(TransitionKind.RAISED, "ep-big")], BIG)
        after = await store.stats(0.0)
        assert (after.pending, after.bytes) == (before.pending, before.bytes)
        assert await store.open_episodes() == []
        [keep] = await store.lease("cmms", 10, 0.0)
        assert keep.message.key == "keep"
        await store._db.execute("PRAGMA max_page_count = 1073741823")  # space returns
        assert await store.commit([transition(TransitionKind.RAISED, "ep-big")], BIG) == 40
        await store.settle([Delivery(keep.id, Outcome.ACCEPTED)], 0.0)
        assert (await store.stats(0.0)).pending == {"cmms": 40}
    async with await OutboxStore.open(db_path) as store:
        assert (await store.stats(0.0)).pending == {"cmms": 40}
        assert [e.episode_id for e in await store.open_episodes()] == ["ep-big"]


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, when this process may mount one (root in a permissive container)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        got = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                             capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if got.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {got.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=10, check=False)


def fill(path: Path) -> None:
    """Write until the file system refuses."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"\xff" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return
    finally:
        os.close(fd)


def remove(path: Path) -> None:
    path.unlink()


async def test_real_full_file_system(tiny_fs: Path) -> None:
    db = tiny_fs / "outbox.sqlite"
    async with await OutboxStore.open(db) as store:
        await store.commit([], [message("keep")])
        fill(tiny_fs / "filler")
        before = await store.stats(0.0)
        with pytest.raises(StorageFull) as info:
            for i in range(50):  # the WAL may still have a few free pages
                await store.commit([], [message(f"b{i}-{j}", asset=f"a{i}-{j}",
                                                body={"pad": "q" * 4000}) for j in range(10)])
        assert str(db) in str(info.value)
        stats = await store.stats(0.0)
        assert stats.pending["cmms"] >= before.pending["cmms"]
        assert stats.pending["cmms"] % 10 == 1  # whole commits only
        remove(tiny_fs / "filler")
        assert await store.commit([], [message("after")]) == 1
    async with await OutboxStore.open(db) as store:
        assert store.recovered_from is None
        assert (await store.stats(0.0)).pending["cmms"] == stats.pending["cmms"] + 1

