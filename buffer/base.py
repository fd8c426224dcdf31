"""The store's plumbing: one aiosqlite connection, one asyncio lock, explicit transactions, and
sqlite3 errors translated into the outbox's own. `OutboxStore` builds on it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import msgpack

from buffer.errors import BufferFull, OutboxError, StorageError, StorageFull
from buffer.lock import OutboxFileLock
from buffer.records import SalvageReport
from buffer.wal import WalDamage
from gateway.model import MessageClass

CHUNK = 500
T = TypeVar("T")


def placeholders(n: int) -> str:
    return ",".join("?" * n)


def chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


class StoreBase:
    """Connection, lock, transactions and the running byte total of an open outbox."""

    def __init__(self, db: aiosqlite.Connection, path: Path, max_bytes: int | None,
                 retention_seconds: float, salvaged: SalvageReport | None = None,
                 file_lock: OutboxFileLock | None = None,
                 wal_damage: WalDamage | None = None) -> None:
        self._db = db
        self.path = path
        self.max_bytes = max_bytes
        self.retention_seconds = retention_seconds
        self.salvage = salvaged  # what opening carried over from a corrupt file, if it was one
        self.wal_damage = wal_damage  # what SQLite dropped from a damaged WAL at open
        self._file_lock = file_lock
        self._lock = asyncio.Lock()
        self._packer = msgpack.Packer()
        self._used = 0
        self._resync = True  # recount tracked bytes before trusting the running total
        self._pressure = False
        self._shed: dict[MessageClass, int] = {}
        self._refused = 0
        self._forgotten = 0
        self._last_prune: float | None = None
        self._closed = False

    def _file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[None]:
        """One write transaction; any failure rolls it back and leaves the store usable."""
        self._check_open()
        try:
            await self._db.execute("BEGIN IMMEDIATE")
            yield
            await self._db.execute("COMMIT")
        except BaseException as exc:
            if not isinstance(exc, BufferFull):  # BufferFull changed nothing we track
                self._resync = True
            with contextlib.suppress(sqlite3.Error, ValueError):
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise translate(exc, self.path) from exc
            raise

    async def _in_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` inside BEGIN IMMEDIATE ... COMMIT as one call on the database thread.

        Each aiosqlite call is a round trip to its thread (a queue put, a wake-up of the event
        loop through its self-pipe: ~20-40 us of the loop's CPU); a settle made of five
        statements paid that five times per round. The hot paths (lease-and-mark, settle) hand
        the whole transaction over at once instead. This uses aiosqlite's `_execute` (its one
        queue to the thread, private but unchanged since 0.17) so the work stays ordered with
        every other statement on the connection. A failure rolls back and leaves the store
        usable, as `_write` does.
        """
        self._check_open()

        def transaction(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                raise
            return result

        try:
            run: Callable[..., Awaitable[T]] = self._db._execute  # untyped in aiosqlite
            return await run(transaction, self._db._conn)
        except sqlite3.Error as exc:
            self._resync = True
            raise translate(exc, self.path) from exc
        except BaseException:
            self._resync = True
            raise

    async def _read(self, sql: str, args: Any = ()) -> list[Any]:
        self._check_open()
        try:
            return list(await self._db.execute_fetchall(sql, args))
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError(f"outbox {self.path} is closed")

    async def _sync_used(self) -> None:
        if self._resync:
            rows = await self._read("SELECT COALESCE(sum(size), 0) FROM outbox")
            self._used = int(rows[0][0])
            self._resync = False


def translate(exc: sqlite3.Error, path: Path) -> StorageError:
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return StorageFull(path)
    return StorageError(path, str(exc))
