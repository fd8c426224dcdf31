"""The transactional outbox: append (with the episode state it implies), lease, settle.

One aiosqlite connection in WAL mode, every operation under one asyncio lock, every write one
explicit transaction. A record leaves the pending state only when settled: ACCEPTED (delivered;
the row keeps its key, without body, so re-enqueueing the same key stays a no-op until the
retention prunes it) or REJECTED (dead letter, until requeued or dropped). Lease is a read: the
caller (one forwarder per sink) settles what it leased; anything unsettled is simply leased
again, so delivery is at least once and the sink's idempotency makes it once in effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import aiosqlite
import msgpack
import orjson

from buffer import attempts as history
from buffer.attempts import Attempt, MessageFacts, StoredRecord, Trace
from buffer.budget import Room, delete_rows, find_room, row_bytes
from buffer.errors import BufferFull, OutboxError, StorageError, StorageFull
from buffer.opening import connect
from buffer.records import DeadLetter, OutboxStats, StatusRows, Synchronous, UrgentRecord
from buffer.schema import DEAD, DELIVERED, PENDING, migrate
from buffer.statements import EPISODE, INSERT, LEASE, leased_record
from gateway.model import (
    Delivery,
    EpisodeState,
    MessageClass,
    MessageKind,
    OutboxMessage,
    OutboxRecord,
    Outcome,
    Transition,
    TransitionKind,
)

__all__ = ["OutboxStore", "Synchronous"]

T = TypeVar("T")

DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600.0
PRUNE_INTERVAL_SECONDS = 300.0
DEFAULT_RETRY_SECONDS = 1.0
_CHUNK = 500
_STATE_NAMES = {PENDING: "pending", DELIVERED: "delivered", DEAD: "dead"}

def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


class OutboxStore:
    """The durable outbox over one SQLite file. Open with `await OutboxStore.open(path)`."""

    def __init__(self, db: aiosqlite.Connection, path: Path, max_bytes: int | None,
                 retention_seconds: float, recovered_from: Path | None) -> None:
        self._db = db
        self.path = path
        self.max_bytes = max_bytes
        self.retention_seconds = retention_seconds
        self.recovered_from = recovered_from  # where a corrupt file was moved at open, if any
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

    @classmethod
    async def open(cls, path: Path, *, synchronous: Synchronous = Synchronous.FULL,
                   max_bytes: int | None = None,
                   retention_seconds: float = DEFAULT_RETENTION_SECONDS) -> OutboxStore:
        """Open (creating, migrating, or recovering from corruption) the outbox at `path`.

        Raises OutboxSchemaTooNew for a file of a newer release, OutboxForeignFile for an SQLite
        file that is not an outbox, StorageError when the file cannot be opened at all.
        """
        path = Path(path)
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError("max_bytes must be positive or None")
        db, moved = await connect(path)
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(f"PRAGMA synchronous = {Synchronous(synchronous).value.upper()}")
            await db.execute("PRAGMA journal_size_limit = 67108864")
            await migrate(db)
        except sqlite3.Error as exc:
            await db.close()
            raise _translate(exc, path) from exc
        except BaseException:
            await db.close()
            raise
        return cls(db, path, max_bytes, retention_seconds, moved)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            async with self._lock:
                await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- append ---------------------------------------------------------------------------

    async def commit(self, transitions: Sequence[Transition],
                     messages: Sequence[OutboxMessage]) -> int:
        """Record transitions and enqueue messages in one transaction; returns how many messages
        were new (a key already stored, delivered or not, is ignored).

        Raises BufferFull (nothing written) when non-event messages do not fit the budget even
        after shedding, StorageFull when the disk is full, StorageError on other I/O failures.
        """
        encoded: dict[str, tuple[OutboxMessage, tuple[Any, ...]]] = {}
        for m in messages:
            if m.key not in encoded:
                body = self._packer.pack(dict(m.body))
                size = row_bytes(m, body)
                encoded[m.key] = (m, (m.key, m.sink, m.asset, m.episode_id, str(m.kind),
                                      int(m.message_class), m.created_at, body, size))
        episodes = [
            (t.episode_id, t.rule_id, t.asset, t.ts, t.severity,
             None if t.kind is TransitionKind.RAISED else t.ts)
            for t in transitions
        ]
        async with self._lock:
            await self._sync_used()
            room: Room | None = None
            try:
                async with self._write():
                    existing = await self._existing_keys(list(encoded))
                    new = [(m, row) for key, (m, row) in encoded.items() if key not in existing]
                    added = sum(row[-1] for _, row in new)
                    over = (self._used + added - self.max_bytes
                            if self.max_bytes is not None and new else 0)
                    if over > 0:
                        room = await self._make_room(over, [m for m, _ in new])
                    if new:
                        await self._db.executemany(INSERT, [row for _, row in new])
                    if episodes:
                        await self._db.executemany(EPISODE, episodes)
            except BufferFull as exc:
                self._pressure = True
                self._refused += exc.refused
                raise
            self._used += added
            if new:
                self._pressure = room is not None
            if room is not None:
                self._used -= room.freed
                for cls, n in room.shed.items():
                    self._shed[cls] = self._shed.get(cls, 0) + n
                self._forgotten += room.forgotten
            return len(new)

    async def _make_room(self, over: int, new: Sequence[OutboxMessage]) -> Room:
        room = await find_room(self._db, over, [m.message_class for m in new])
        if room.short > 0 and any(m.message_class is not MessageClass.EVENT for m in new):
            assert self.max_bytes is not None
            raise BufferFull(sum(1 for m in new if m.message_class is not MessageClass.EVENT),
                             self._used, self.max_bytes)
        await delete_rows(self._db, room.victims)
        return room

    async def _existing_keys(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(keys):
            rows = await self._db.execute_fetchall(
                f"SELECT key FROM outbox WHERE key IN ({_marks(len(chunk))})", chunk)
            found.update(r[0] for r in rows)
        return found

    async def open_episodes(self) -> list[EpisodeState]:
        """Episodes raised and not yet cleared, oldest first: restored into rules at start."""
        async with self._lock:
            rows = await self._read(
                "SELECT rule_id, asset, episode_id, raised_at, severity FROM episodes"
                " WHERE cleared_at IS NULL ORDER BY raised_at, episode_id")
        return [EpisodeState(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    # --- deliver --------------------------------------------------------------------------

    async def lease(self, sink: str, limit: int, now: float) -> list[OutboxRecord]:
        """Due pending records of `sink`, oldest first, at most one per asset (its head of line).

        A read: nothing changes until `settle`. Run one leaser per sink.
        """
        if limit <= 0:
            return []
        async with self._lock:
            rows = await self._read(LEASE, {"sink": sink, "now": now, "limit": limit})
        return [leased_record(r) for r in rows]

    async def mark_sent(self, ids: Sequence[int], now: float) -> None:
        """Record, durably, that a send of these records starts now (cleared by `settle`).

        After a crash mid-send the next lease shows `unsettled_send_at`, so a sink whose API
        has no idempotency key knows the outcome upstream is unknown and can wait before it
        looks the record up, instead of creating it a second time.
        """
        if not ids:
            return
        async with self._lock, self._write():
            await self._db.executemany(
                "UPDATE outbox SET sent_at = ? WHERE id = ? AND state = 0",
                [(now, rid) for rid in ids])

    async def settle(self, deliveries: Sequence[Delivery], now: float) -> None:
        """Apply sink outcomes. Unknown or already settled record ids are ignored."""
        first: dict[int, Delivery] = {}
        for d in deliveries:
            first.setdefault(d.record_id, d)
        async with self._lock:
            await self._sync_used()
            freed = 0
            async with self._write():
                live: dict[int, tuple[str, str, int]] = {}
                for chunk in _chunks(list(first)):
                    rows = await self._db.execute_fetchall(
                        "SELECT id, sink, episode_id, COALESCE(length(body), 0) FROM outbox"
                        f" WHERE state = 0 AND id IN ({_marks(len(chunk))})", chunk)
                    live.update((r[0], (r[1], r[2], r[3])) for r in rows)
                ok, receipts, dead, retry = [], [], [], []
                for rid, (sink, episode_id, body_len) in live.items():
                    d = first[rid]
                    if d.outcome is Outcome.ACCEPTED:
                        ok.append((now, rid))
                        freed += body_len
                        if d.receipt:
                            receipts.append((sink, episode_id, d.receipt, now))
                    elif d.outcome is Outcome.REJECTED:
                        dead.append((now, d.reason or "rejected", rid))
                    else:
                        delay = (DEFAULT_RETRY_SECONDS if d.retry_after_seconds is None
                                 else max(0.0, d.retry_after_seconds))
                        retry.append((now + delay, d.reason, rid))
                await self._db.executemany(
                    "UPDATE outbox SET state = 1, settled_at = ?, sent_at = NULL,"
                    " size = size - COALESCE(length(body), 0), body = NULL WHERE id = ?", ok)
                # first receipt wins: the raise's id is what later messages must refer to
                await self._db.executemany(
                    "INSERT OR IGNORE INTO receipts (sink, episode_id, receipt, stored_at)"
                    " VALUES (?, ?, ?, ?)", receipts)
                await self._db.executemany(
                    "UPDATE outbox SET state = 2, settled_at = ?, last_error = ?, sent_at = NULL,"
                    " attempts = attempts + 1 WHERE id = ?", dead)
                await self._db.executemany(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?,"
                    " last_error = ?, sent_at = NULL WHERE id = ?", retry)
                pruned = await self._maybe_prune(now)
            self._used -= freed + pruned

    async def _maybe_prune(self, now: float) -> int:
        """Forget delivered keys, closed episodes and their receipts past the retention;
        returns the tracked bytes freed."""
        if self._last_prune is not None and now - self._last_prune < PRUNE_INTERVAL_SECONDS:
            return 0
        self._last_prune = now
        cutoff = now - self.retention_seconds
        rows = await self._db.execute_fetchall(
            "SELECT COALESCE(sum(size), 0) FROM outbox WHERE state = 1 AND settled_at < ?",
            (cutoff,))
        pruned = int(next(iter(rows))[0])
        await self._db.execute(
            "DELETE FROM outbox WHERE state = 1 AND settled_at < ?", (cutoff,))
        await self._db.execute(
            "DELETE FROM episodes WHERE cleared_at IS NOT NULL AND cleared_at < ?", (cutoff,))
        await self._db.execute(
            "DELETE FROM receipts WHERE stored_at < ?"
            " AND episode_id NOT IN (SELECT episode_id FROM episodes)"
            " AND episode_id NOT IN (SELECT episode_id FROM outbox WHERE state <> 1)",
            (cutoff,))
        for sql in history.PRUNE_SQL:  # attempt history goes with the records it describes
            await self._db.execute(sql, (cutoff,))
        return pruned

    # --- operate --------------------------------------------------------------------------

    async def stats(self, now: float) -> OutboxStats:
        async with self._lock:
            await self._sync_used()
            counts = await self._read(
                "SELECT sink, state, count(*) FROM outbox GROUP BY sink, state")
            oldest = await self._read("SELECT min(created_at) FROM outbox WHERE state = 0")
        by_state: dict[str, dict[str, int]] = {name: {} for name in _STATE_NAMES.values()}
        for sink, state, n in counts:
            by_state[_STATE_NAMES[state]][sink] = n
        first = oldest[0][0] if oldest else None
        budget = self.max_bytes
        return OutboxStats(
            pending=by_state["pending"],
            dead=by_state["dead"],
            delivered=by_state["delivered"],
            oldest_pending_age_seconds=None if first is None else max(0.0, now - first),
            bytes=self._used,
            file_bytes=self._file_bytes(),
            budget_bytes=budget,
            shed={cls.name.lower(): n for cls, n in sorted(self._shed.items())},
            refused=self._refused,
            forgotten=self._forgotten,
            full=budget is not None and (self._pressure or self._used >= budget),
        )

    def _file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    async def dead_letters(self, sink: str | None = None, limit: int = 100) -> list[DeadLetter]:
        where, args = ("AND sink = ?", (sink,)) if sink is not None else ("", ())
        async with self._lock:
            rows = await self._read(
                "SELECT id, key, sink, asset, kind, last_error, settled_at, attempts FROM outbox"
                f" WHERE state = 2 {where} ORDER BY id LIMIT ?", (*args, limit))
        return [DeadLetter(r[0], r[1], r[2], r[3], MessageKind(r[4]), r[5], r[6], r[7])
                for r in rows]

    async def requeue_dead(self, ids: Sequence[int]) -> int:
        """Make dead letters pending again (due now, attempts reset); returns how many."""
        return await self._update_dead(
            "UPDATE outbox SET state = 0, attempts = 0, next_attempt_at = 0, settled_at = NULL"
            " WHERE state = 2 AND id IN ({}) RETURNING size", ids, frees=False)

    async def drop_dead(self, ids: Sequence[int]) -> int:
        """Delete dead letters for good (their keys may then be enqueued again)."""
        return await self._update_dead(
            "DELETE FROM outbox WHERE state = 2 AND id IN ({}) RETURNING size", ids, frees=True)

    async def _update_dead(self, sql: str, ids: Sequence[int], *, frees: bool) -> int:
        """Run `sql` (which returns the size of each row it affects) over the given ids."""
        unique = list(dict.fromkeys(ids))
        n = freed = 0
        async with self._lock:
            async with self._write():
                for chunk in _chunks(unique):
                    rows = list(await self._db.execute_fetchall(
                        sql.format(_marks(len(chunk))), chunk))
                    n += len(rows)
                    freed += sum(r[0] for r in rows) if frees else 0
            self._used -= freed
        return n

    # --- plumbing -------------------------------------------------------------------------

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
                raise _translate(exc, self.path) from exc
            raise

    async def _read(self, sql: str, args: Any = ()) -> list[Any]:
        self._check_open()
        try:
            return list(await self._db.execute_fetchall(sql, args))
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError(f"outbox {self.path} is closed")

    async def _sync_used(self) -> None:
        if self._resync:
            rows = await self._read("SELECT COALESCE(sum(size), 0) FROM outbox")
            self._used = int(rows[0][0])
            self._resync = False

    # --- attempt history (trace) ---
    # Thin wrappers: the SQL lives in buffer/attempts.py. Reads take no lock of the daemon's:
    # WAL lets `plantbridge trace` and `outbox` read beside a running gateway.

    async def record_attempts(self, attempts: Sequence[Attempt],
                              facts: Sequence[MessageFacts] = ()) -> None:
        """Append delivery attempts (and first-seen message facts) in one transaction."""
        if attempts or facts:
            async with self._lock, self._write():
                await history.write(self._db, attempts, facts)

    async def trace(self, ident: str) -> Trace | None:
        """One episode's life by episode id, idempotency key, external ref or receipt."""
        async with self._lock:
            return await self._query(history.find_trace(self._db, ident))

    async def records(self, *, sink: str | None = None, asset: str | None = None,
                      dead: bool = False, bodies: bool = False,
                      limit: int = 1000) -> list[StoredRecord]:
        """Undelivered records (or only dead letters), oldest first, bodies if asked."""
        async with self._lock:
            return await self._query(history.list_records(
                self._db, sink=sink, asset=asset, dead=dead, bodies=bodies, limit=limit))

    async def drop_records(self, ids: Sequence[int]) -> int:
        """Delete undelivered records (pending or dead) for good; returns how many."""
        return await self._update_dead(
            "DELETE FROM outbox WHERE state <> 1 AND id IN ({}) RETURNING size", ids, frees=True)

    async def _query(self, query: Awaitable[T]) -> T:
        self._check_open()
        try:
            return await query
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc

    # --- status page ---
    # Small reads for the status page, `/readyz` and `plantbridge status`; all bounded.

    async def status_rows(self, now: float, urgent_after_seconds: float,
                          urgent_severity: int = 1) -> StatusRows:
        """Upstream ids and request facts of open episodes, the oldest pending age per sink,
        and maintenance requests of severity <= `urgent_severity` still pending or dead more
        than `urgent_after_seconds` after they were committed."""
        async with self._lock:
            receipts = await self._read(
                "SELECT r.sink, r.episode_id, r.receipt FROM receipts r JOIN episodes e"
                " ON e.episode_id = r.episode_id WHERE e.cleared_at IS NULL LIMIT 1000")
            facts = await self._read(
                "SELECT f.episode_id, f.facts FROM attempt_facts f JOIN episodes e"
                " ON e.episode_id = f.episode_id WHERE e.cleared_at IS NULL LIMIT 1000")
            undelivered = await self._read(
                "SELECT o.sink, o.episode_id, o.state FROM outbox o JOIN episodes e"
                " ON e.episode_id = o.episode_id WHERE e.cleared_at IS NULL"
                " AND o.state IN (?, ?) AND o.kind = ? LIMIT 1000",
                (PENDING, DEAD, MessageKind.MAINTENANCE_REQUEST.value))
            oldest = await self._read(
                "SELECT sink, min(created_at) FROM outbox WHERE state = 0 GROUP BY sink")
            urgent = await self._read(
                "SELECT o.sink, o.asset, o.episode_id, o.state, o.created_at, o.last_error,"
                " e.severity FROM outbox o JOIN episodes e ON e.episode_id = o.episode_id"
                " WHERE o.state IN (?, ?) AND o.kind = ? AND e.severity <= ?"
                " AND o.created_at <= ? ORDER BY o.created_at LIMIT 50",
                (PENDING, DEAD, MessageKind.MAINTENANCE_REQUEST.value, urgent_severity,
                 now - urgent_after_seconds))
        said: dict[str, dict[str, object]] = {}
        for episode_id, text in facts:
            with contextlib.suppress(orjson.JSONDecodeError):
                doc = orjson.loads(text)
                if isinstance(doc, dict) and "status" not in doc:  # the raise, not a clear
                    said.setdefault(episode_id, doc)
        return StatusRows(
            receipts={(sink, ep): receipt for sink, ep, receipt in receipts},
            facts=said,
            oldest_pending_age_seconds={sink: max(0.0, now - t) for sink, t in oldest},
            undelivered={(sink, ep): _STATE_NAMES[st] for sink, ep, st in undelivered},
            urgent=[UrgentRecord(r[0], r[1], r[2], _STATE_NAMES[r[3]], r[4], r[5], r[6])
                    for r in urgent])


def _translate(exc: sqlite3.Error, path: Path) -> StorageError:
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return StorageFull(path)
    return StorageError(path, str(exc))

