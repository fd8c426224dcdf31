"""Opening the outbox file: integrity check, moving a corrupt file aside, refusing foreign ones.

A corrupt outbox must not keep the gateway down: it is moved aside (kept for forensics, with its
WAL beside it under a matching name so SQLite can still open the copy) and a fresh one is
created. A valid SQLite file that is not ours, or is from a newer release, is refused instead:
that is a configuration mistake, and guessing would destroy someone's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from buffer.errors import OutboxForeignFile, OutboxSchemaTooNew, StorageError
from buffer.schema import APPLICATION_ID, LATEST

_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_SIDE_FILES = ("-wal", "-shm", "-journal")


async def connect(path: Path) -> tuple[aiosqlite.Connection, Path | None]:
    """Connect to a checked outbox file; returns the connection and where a corrupt file went."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # SQLite deletes the WAL when its last connection closes: keep a hard link to the WAL as
    # found, so a corrupt file can be moved aside together with it.
    wal, kept_wal = _side(path, "-wal"), _side(path, "-wal.as-found")
    with contextlib.suppress(OSError):
        kept_wal.unlink(missing_ok=True)
        if wal.exists():
            os.link(wal, kept_wal)
    db = await _connect(path)
    try:
        healthy = await _quick_check(db, path)
    except BaseException:
        await db.close()
        raise
    if healthy:
        moved = None
    else:
        await db.close()
        if kept_wal.exists():
            kept_wal.replace(wal)
        moved = move_aside(path)
        db = await _connect(path)
    with contextlib.suppress(OSError):
        kept_wal.unlink(missing_ok=True)
    try:
        await _check_identity(db, path)
    except BaseException:
        await db.close()
        raise
    return db, moved


def _probe(path: Path) -> None:
    sqlite3.connect(path).close()


async def _connect(path: Path) -> aiosqlite.Connection:
    # Probe first: when aiosqlite's own connect fails, its worker thread outlives the call and
    # may report to an event loop that is gone by then.
    try:
        await asyncio.to_thread(_probe, path)
        db = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageError(path, f"cannot open: {exc}") from exc
    await db.execute("PRAGMA busy_timeout = 5000")
    return db


async def _quick_check(db: aiosqlite.Connection, path: Path) -> bool:
    try:
        async with db.execute("PRAGMA quick_check") as cur:
            rows = await cur.fetchall()
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) in _CORRUPT_CODES:
            return False
        raise StorageError(path, f"cannot read: {exc}") from exc
    return [tuple(r) for r in rows] == [("ok",)]


def _side(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def move_aside(path: Path) -> Path:
    """Rename `path` (and its -wal/-shm) to `<name>.corrupt-<UTC timestamp>`; returns the new
    path of the main file."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    if path.exists():
        path.rename(target)
    for suffix in _SIDE_FILES:
        side = _side(path, suffix)
        if side.exists():
            side.rename(_side(target, suffix))
    return target


async def _check_identity(db: aiosqlite.Connection, path: Path) -> None:
    app = await _pragma_int(db, "application_id", path)
    version = await _pragma_int(db, "user_version", path)
    if app == APPLICATION_ID:
        if version > LATEST:
            raise OutboxSchemaTooNew(path, version, LATEST)
        return
    if app != 0:
        raise OutboxForeignFile(path, f"SQLite application id {app:#x}")
    if version != 0:
        raise OutboxForeignFile(path, f"unmarked SQLite file with schema version {version}")
    async with db.execute("SELECT count(*) FROM sqlite_master") as cur:
        row = await cur.fetchone()
    if row and row[0]:
        raise OutboxForeignFile(path, f"unmarked SQLite file with {row[0]} schema objects")


async def _pragma_int(db: aiosqlite.Connection, name: str, path: Path) -> int:
    try:
        async with db.execute(f"PRAGMA {name}") as cur:
            row = await cur.fetchone()
    except sqlite3.Error as exc:
        raise StorageError(path, f"cannot read: {exc}") from exc
    return int(row[0]) if row else 0
