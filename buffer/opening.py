"""Opening the outbox file: lock, integrity check, salvage of a corrupt file, WAL check,
refusing foreign ones.

A corrupt outbox must not keep the gateway down, nor make it forget: it is moved aside (kept for
forensics, with its WAL beside it under a matching name so SQLite can still open the copy), a
fresh one is created, and what the old one still holds is carried over (buffer/salvage.py). A
WAL that SQLite would silently cut short is kept aside and reported (buffer/wal.py). Both leave a
notice in the file until acknowledged. A valid SQLite file that is not ours, or is from a newer
release, is refused instead: that is a configuration mistake, and guessing would destroy
someone's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import msgpack

from buffer.errors import OutboxForeignFile, OutboxSchemaTooNew, StorageError
from buffer.lock import OutboxFileLock, in_use
from buffer.records import SalvageReport, Synchronous
from buffer.salvage import ADD_NOTICE, SALVAGE_PENDING, salvage
from buffer.schema import APPLICATION_ID, LATEST, downgrade, migrate
from buffer.wal import WalDamage, inspect_wal

_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_SIDE_FILES = ("-wal", "-shm", "-journal")


@dataclass(slots=True)
class Opened:
    """A checked, migrated connection and what opening found."""

    db: aiosqlite.Connection
    salvage: SalvageReport | None
    wal_damage: WalDamage | None
    file_lock: OutboxFileLock | None


async def open_outbox(path: Path, synchronous: Synchronous, *, lock: bool) -> Opened:
    """Lock (when asked), check, salvage or create, and migrate the outbox at `path`.

    Without the lock, beside a running daemon (an offline tool: dead-letters, trace, outbox),
    the file is only opened: checking, salvaging, migrating or inspecting its WAL is the
    owner's job, and a WAL being written is no damage.
    """
    if not lock and in_use(path):
        db = await _connect(path)
        try:
            await db.execute(f"PRAGMA synchronous = {Synchronous(synchronous).value.upper()}")
            await _check_identity(db, path)
        except BaseException:
            await db.close()
            raise
        return Opened(db, None, None, None)
    file_lock = OutboxFileLock.acquire(path) if lock else None
    try:
        db, moved, damage = await connect(path)
    except BaseException:
        if file_lock is not None:
            file_lock.release()
        raise
    try:
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute(f"PRAGMA synchronous = {Synchronous(synchronous).value.upper()}")
        await db.execute("PRAGMA journal_size_limit = 67108864")
        await migrate(db)
        report = await _salvage(db, path, moved)
        if damage is not None:
            await db.execute(ADD_NOTICE, ("wal-damage", time.time(), damage.detail,
                                          msgpack.packb({"frames_dropped": damage.frames_dropped,
                                                         "kept_at": str(damage.kept_at)})))
    except BaseException:
        await db.close()
        if file_lock is not None:
            file_lock.release()
        raise
    return Opened(db, report, damage, file_lock)


async def _salvage(db: aiosqlite.Connection, path: Path,
                   moved: Path | None) -> SalvageReport | None:
    """Carry over what `moved` still holds. The intent is committed first, so a salvage cut
    short (killed mid-way: its transaction is rolled back) is simply run again at next open."""
    if moved is not None:
        await db.execute(ADD_NOTICE, (SALVAGE_PENDING, time.time(), str(moved),
                                      msgpack.packb({})))
    async with db.execute("SELECT id, message FROM notices WHERE kind = ? ORDER BY id",
                          (SALVAGE_PENDING,)) as cur:
        pending = [(int(r[0]), Path(r[1])) for r in await cur.fetchall()]
    report = None
    for notice_id, source in pending:
        if not source.exists():  # removed by hand since: nothing left to carry
            await db.execute("DELETE FROM notices WHERE id = ?", (notice_id,))
            continue
        report = await asyncio.to_thread(salvage, source, path, pending_notice=notice_id)
    return report


async def connect(path: Path) -> tuple[aiosqlite.Connection, Path | None, WalDamage | None]:
    """Connect to a checked outbox file; returns the connection, where a corrupt file went, and
    what SQLite will drop from a damaged WAL (that WAL is kept aside as found)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # SQLite deletes the WAL when its last connection closes: keep a hard link to the WAL as
    # found, so a corrupt file can be moved aside together with it.
    wal, kept_wal = _side(path, "-wal"), _side(path, "-wal.as-found")
    with contextlib.suppress(OSError):
        kept_wal.unlink(missing_ok=True)
        if wal.exists():
            os.link(wal, kept_wal)
    damage = await asyncio.to_thread(inspect_wal, wal) if kept_wal.exists() else None
    if damage is not None:
        with contextlib.suppress(OSError):  # a copy: SQLite rewrites the WAL in place
            damage.kept_at = _stamped(path, "-wal.damaged")
            damage.kept_at.write_bytes(kept_wal.read_bytes())
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
    return db, moved, damage


def _probe(path: Path) -> None:
    sqlite3.connect(path).close()


async def downgrade_file(path: Path, target: int) -> int:
    """Take the outbox at `path` back to schema `target` for an older release, holding the
    daemon's lock (OutboxLocked while it runs); returns the version it was at. The file is
    taken as it is: opened without the store, which would migrate it forward first. Raises
    schema.CannotDowngrade, having changed nothing, when a step cannot be undone."""
    if not await asyncio.to_thread(path.is_file):
        raise StorageError(path, "no outbox file here: nothing to downgrade")
    file_lock = OutboxFileLock.acquire(path)
    try:
        db = await _connect(path)
        try:
            await _check_identity(db, path)
            return await downgrade(db, target)
        except sqlite3.Error as exc:  # a damaged file: `plantbridge run` salvages it first
            raise StorageError(path, f"cannot downgrade: {exc}") from exc
        finally:
            await db.close()
    finally:
        file_lock.release()


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
    target = _stamped(path, ".corrupt")
    if path.exists():
        path.rename(target)
    for suffix in _SIDE_FILES:
        side = _side(path, suffix)
        if side.exists():
            side.rename(_side(target, suffix))
    return target


def _stamped(path: Path, suffix: str) -> Path:
    """`<name><suffix>-<UTC timestamp>[-n]`, a name not taken yet."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}{suffix}-{stamp}")
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{suffix}-{stamp}-{n}")
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
