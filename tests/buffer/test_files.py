"""Opening files: corrupt ones are moved aside, foreign and too-new ones refused, old ones
migrated."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from buffer.errors import OutboxForeignFile, OutboxLocked, OutboxSchemaTooNew, StorageError
from buffer.opening import downgrade_file
from buffer.schema import APPLICATION_ID, LATEST, migrate
from buffer.store import OutboxStore
from gateway.model import TransitionKind
from tests.buffer.conftest import message, pragma, transition


async def filled(path: Path, n: int = 200) -> None:
    async with await OutboxStore.open(path) as store:
        await store.commit([transition(TransitionKind.RAISED)],
                           [message(f"k{i}", asset=f"a{i}", body={"pad": "y" * 1000})
                            for i in range(n)])


def sqlite_exec(path: Path, *sql: str) -> None:
    conn = sqlite3.connect(path)
    try:
        for s in sql:
            conn.execute(s)
        conn.commit()
    finally:
        conn.close()


def sqlite_user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def read(path: Path) -> bytes:
    return path.read_bytes()


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def truncate_half(path: Path) -> int:
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)
    return size


def scribble(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


async def assert_fresh_and_working(path: Path) -> None:
    async with await OutboxStore.open(path) as store:
        assert store.recovered_from is None
        assert (await store.stats(0.0)).pending == {}
        assert await store.commit([], [message("after")]) == 1


async def test_truncated_file_is_moved_aside_with_its_wal(db_path: Path) -> None:
    await filled(db_path)
    size = truncate_half(db_path)
    write(db_path.with_name(db_path.name + "-wal"), b"\0" * 100)
    async with await OutboxStore.open(db_path) as store:
        moved = store.recovered_from
        assert moved is not None
        assert re.fullmatch(r"outbox\.sqlite\.corrupt-\d{8}T\d{6}Z", moved.name), moved.name
        assert len(read(moved)) == size // 2
        assert read(moved.with_name(moved.name + "-wal")) == b"\0" * 100
        assert store.salvage is not None and store.salvage.moved_to == moved
        assert await store.commit([], [message("new-key")]) == 1
    await filled(db_path.with_name("other.sqlite"))


async def test_scribbled_page_is_detected(db_path: Path) -> None:
    await filled(db_path)
    scribble(db_path, 4096 * 3, bytes(range(256)) * 16)
    async with await OutboxStore.open(db_path) as store:
        assert store.recovered_from is not None
        # what the scribbled page did not hold is carried over (see test_salvage.py)
        report = store.salvage
        assert report is not None
        pending = (await store.stats(0.0)).pending.get("cmms", 0)
        assert report.carried["pending"] == pending
    async with await OutboxStore.open(db_path) as store:
        assert store.recovered_from is None
        assert await store.commit([], [message("after")]) == 1


async def test_garbage_file_is_moved_aside_twice_without_clobbering(db_path: Path) -> None:
    moved = []
    for _ in range(2):
        write(db_path, b"this is not a database " * 100)
        async with await OutboxStore.open(db_path) as store:
            assert store.recovered_from is not None
            moved.append(store.recovered_from)
    assert moved[0] != moved[1] and all(p.exists() for p in moved)


async def test_empty_file_is_just_a_new_outbox(db_path: Path) -> None:
    write(db_path, b"")
    await assert_fresh_and_working(db_path)


async def test_schema_too_new_is_refused(db_path: Path) -> None:
    await filled(db_path, 3)
    sqlite_exec(db_path, f"PRAGMA user_version = {LATEST + 1}")
    with pytest.raises(OutboxSchemaTooNew, match=f"schema version {LATEST + 1}.*up to {LATEST}"):
        await OutboxStore.open(db_path)
    sqlite_exec(db_path, f"PRAGMA user_version = {LATEST}")
    async with await OutboxStore.open(db_path) as store:
        assert (await store.stats(0.0)).pending == {"cmms": 3}


@pytest.mark.parametrize("setup", [
    ("CREATE TABLE invoices (id INTEGER)",),
    (f"PRAGMA application_id = {APPLICATION_ID + 1}",),
    ("PRAGMA user_version = 3",),
])
async def test_foreign_sqlite_file_is_refused_untouched(db_path: Path,
                                                        setup: tuple[str, ...]) -> None:
    db_path.parent.mkdir(parents=True)
    sqlite_exec(db_path, *setup)
    before = read(db_path)
    with pytest.raises(OutboxForeignFile, match="not a PlantBridge outbox"):
        await OutboxStore.open(db_path)
    assert read(db_path) == before
    assert list(db_path.parent.iterdir()) == [db_path]


@pytest.mark.parametrize("version", range(LATEST))
async def test_migrates_from_every_earlier_version(db_path: Path, version: int) -> None:
    db_path.parent.mkdir(parents=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as db:
        assert await migrate(db, target=version) == 0
        if version >= 1:
            await db.execute(
                "INSERT INTO outbox (key, sink, asset, episode_id, kind, class, created_at,"
                " body, size) VALUES ('old', 'cmms', 'p1', 'ep-1', 'maintenance_request', 2,"
                " 5.0, x'81a161c3', 100)")
            await db.execute(
                "INSERT INTO episodes VALUES ('ep-1', 'vib-high', 'p1', 5.0, 2, NULL)")
    async with await OutboxStore.open(db_path) as store:
        assert await pragma(store, "user_version") == LATEST
        rows = await store._db.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE name = 'outbox_delivered'")
        assert len(list(rows)) == 1
        cols = await store._db.execute_fetchall("SELECT name FROM pragma_table_info('outbox')")
        assert "sent_at" in {c[0] for c in cols}  # version 3
        recs = await store.lease("cmms", 10, 10.0)
        if version >= 1:
            assert [(r.message.key, r.message.body) for r in recs] == [("old", {"a": True})]
            assert [e.episode_id for e in await store.open_episodes()] == ["ep-1"]
            assert (await store.stats(10.0)).bytes == 100
        else:
            assert recs == []


async def test_downgrade_refuses_a_missing_file_a_held_one_and_a_foreign_one(
        db_path: Path) -> None:
    with pytest.raises(StorageError, match="no outbox file here"):
        await downgrade_file(db_path, LATEST - 1)
    assert not db_path.parent.is_dir() or not list(db_path.parent.iterdir())  # nothing made
    async with await OutboxStore.open(db_path, lock=True):  # the daemon runs
        with pytest.raises(OutboxLocked):
            await downgrade_file(db_path, LATEST - 1)
    assert sqlite_user_version(db_path) == LATEST
    other = db_path.with_name("other.sqlite")
    sqlite_exec(other, "CREATE TABLE t (x)")
    with pytest.raises(OutboxForeignFile):
        await downgrade_file(other, 1)
    damaged = db_path.with_name("damaged.sqlite")
    damaged.write_bytes(b"SQLite format 3\x00" + b"\xde\xad" * 4000)
    with pytest.raises(StorageError, match=r"damaged\.sqlite"):
        await downgrade_file(damaged, 1)
    assert damaged.read_bytes() == b"SQLite format 3\x00" + b"\xde\xad" * 4000


async def test_downgrade_then_upgrade_keeps_the_lease_order(db_path: Path) -> None:
    async with await OutboxStore.open(db_path) as store:
        await store.commit([], [message("r1", episode_id="e1"), message("c1", episode_id="e1")])
    assert await downgrade_file(db_path, 8) == LATEST
    assert sqlite_user_version(db_path) == 8
    async with await OutboxStore.open(db_path) as store:  # migrated forward again
        assert await pragma(store, "user_version") == LATEST
        assert [r.message.key for r in await store.lease("cmms", 10, 1e9)] == ["r1"]
