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
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import aiosqlite
import msgpack

from buffer.budget import Room, delete_rows, find_room, row_bytes
from buffer.errors import BufferFull, OutboxError, StorageError, StorageFull
from buffer.lock import OutboxFileLock
from buffer.opening import open_outbox
from buffer.records import DeadLetter, Notice, OutboxStats, SalvageReport, Synchronous
from buffer.retention import prune
from buffer.state import LOAD_MARKS, LOAD_STATES, StateRows, mark_row, rule_state_row
from buffer.statements import EPISODE, INSERT, LEASE, leased_record
from buffer.stats import DEFAULT_STUCK_AFTER_SECONDS, sink_figures
from buffer.wal import WalDamage
from gateway.model import (
    Delivery,
    EpisodeState,
    MessageClass,
    MessageKind,
    OutboxMessage,
    OutboxRecord,
    Outcome,
    RuleState,
    SampleMark,
    Transition,
    TransitionKind,
)

__all__ = ["OutboxStore", "Synchronous"]

DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600.0
PRUNE_INTERVAL_SECONDS = 300.0
DEFAULT_RETRY_SECONDS = 1.0
_CHUNK = 500


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


class OutboxStore:
    """The durable outbox over one SQLite file. Open with `await OutboxStore.open(path)`."""

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

    @classmethod
    async def open(cls, path: Path, *, synchronous: Synchronous = Synchronous.FULL,
                   max_bytes: int | None = None,
                   retention_seconds: float = DEFAULT_RETENTION_SECONDS,
                   lock: bool = False) -> OutboxStore:
        """Open (creating, migrating, or salvaging a corrupt file into a fresh one) the outbox
        at `path`.

        With `lock`, hold an exclusive lock on `<path>.lock` until `close()` (the daemon does;
        offline tools do not): a second locking opener gets OutboxLocked naming our PID.
        Raises OutboxSchemaTooNew for a file of a newer release, OutboxForeignFile for an SQLite
        file that is not an outbox, StorageError when the file cannot be opened at all.
        """
        path = Path(path)
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError("max_bytes must be positive or None")
        try:
            opened = await open_outbox(path, synchronous, lock=lock)
        except sqlite3.Error as exc:
            raise _translate(exc, path) from exc
        return cls(opened.db, path, max_bytes, retention_seconds, opened.salvage,
                   opened.file_lock, opened.wal_damage)

    @property
    def recovered_from(self) -> Path | None:
        """Where a corrupt file was moved aside at open, if it was (see `salvage`)."""
        return None if self.salvage is None else self.salvage.moved_to

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            async with self._lock:
                try:
                    await self._db.close()
                finally:
                    if self._file_lock is not None:
                        self._file_lock.release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- append ---------------------------------------------------------------------------

    async def commit(self, transitions: Sequence[Transition],
                     messages: Sequence[OutboxMessage], states: Sequence[RuleState] = (),
                     marks: Sequence[SampleMark] = ()) -> int:
        """Record transitions, enqueue messages, and store the rule states and sample marks
        a group of samples changed, all in one transaction; returns how many messages were new
        (a key already stored, delivered or not, is ignored).

        A state whose `data` is None deletes that instance's row; for one (rule_id, asset) or
        one mark key the last entry wins. Raises BufferFull (nothing at all written, states and
        marks included) when non-event messages do not fit the budget even after shedding,
        StorageFull when the disk is full, StorageError on other I/O failures, ValueError (before
        writing) for a state msgpack cannot encode.
        """
        state_rows = StateRows(self._packer, states, marks, time.time())
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
        if not encoded and not episodes:
            if state_rows:  # the common case of a busy plant: state only, no budget work
                async with self._lock, self._write():
                    await state_rows.write(self._db)
            return 0
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
                    await state_rows.write(self._db)
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

    async def load_rule_states(self) -> list[RuleState]:
        """Every stored rule instance state (by rule_id, asset): restored into rules at start."""
        async with self._lock:
            rows = await self._read(LOAD_STATES)
        return [rule_state_row(r) for r in rows]

    async def load_marks(self) -> list[SampleMark]:
        """The newest device time evaluated per (source, asset, signal), restored at start."""
        async with self._lock:
            rows = await self._read(LOAD_MARKS)
        return [mark_row(r) for r in rows]

    # --- deliver --------------------------------------------------------------------------

    async def lease(self, sink: str, limit: int, now: float) -> list[OutboxRecord]:
        """Due pending records of `sink`, oldest first, at most one per episode (its head of
        line): a clear waits for its raise to be settled; other episodes never wait.

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
        return await prune(self._db, now - self.retention_seconds)

    # --- operate --------------------------------------------------------------------------

    async def stats(self, now: float, *,
                    stuck_after_seconds: float = DEFAULT_STUCK_AFTER_SECONDS) -> OutboxStats:
        """A snapshot; a pending record whose first attempt failed and that is older than
        `stuck_after_seconds` counts as stuck."""
        async with self._lock:
            await self._sync_used()
            fig = await sink_figures(self._read, now, stuck_after_seconds)
        budget = self.max_bytes
        return OutboxStats(
            pending=fig.by_state["pending"],
            dead=fig.by_state["dead"],
            delivered=fig.by_state["delivered"],
            oldest_pending_age_seconds=fig.oldest_overall,
            bytes=self._used,
            file_bytes=self._file_bytes(),
            budget_bytes=budget,
            shed={cls.name.lower(): n for cls, n in sorted(self._shed.items())},
            refused=self._refused,
            forgotten=self._forgotten,
            full=budget is not None and (self._pressure or self._used >= budget),
            oldest_pending_age_by_sink=fig.oldest_age,
            stuck=fig.stuck,
            stuck_oldest=fig.stuck_oldest,
        )

    async def notices(self) -> list[Notice]:
        """Unacknowledged notices (e.g. a salvaged corrupt file), oldest first."""
        async with self._lock:
            rows = await self._read(
                "SELECT id, kind, created_at, message, detail FROM notices"
                " WHERE acknowledged_at IS NULL ORDER BY id")
        return [Notice(r[0], r[1], r[2], r[3], msgpack.unpackb(r[4])) for r in rows]

    async def acknowledge_notices(self, now: float | None = None) -> int:
        """Mark every notice seen; returns how many were open."""
        async with self._lock, self._write():
            cur = await self._db.execute(
                "UPDATE notices SET acknowledged_at = ? WHERE acknowledged_at IS NULL",
                (time.time() if now is None else now,))
            return cur.rowcount

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


def _translate(exc: sqlite3.Error, path: Path) -> StorageError:
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return StorageFull(path)
    return StorageError(path, str(exc))

