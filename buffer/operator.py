"""Operator views of the outbox: dead letters (list, requeue, drop), notices (what opening
found damaged, until acknowledged), and the delivery attempt history behind `trace`. Used by
the CLI and the status page."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import msgpack

from buffer import attempts as history
from buffer import shelves as shelf_table
from buffer.attempts import Attempt, MessageFacts, StoredRecord, Trace
from buffer.base import StoreBase, chunks, placeholders, translate
from buffer.records import DeadLetter, Notice
from buffer.salvage import SALVAGE_PENDING
from buffer.shelves import Shelf
from gateway.model import MessageKind

T = TypeVar("T")


class OperatorViews(StoreBase):
    """Dead letters and notices of an open outbox."""

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
                for chunk in chunks(unique):
                    rows = list(await self._db.execute_fetchall(
                        sql.format(placeholders(len(chunk))), chunk))
                    n += len(rows)
                    freed += sum(r[0] for r in rows) if frees else 0
            self._used -= freed
        return n

    async def notices(self) -> list[Notice]:
        """Unacknowledged notices (e.g. a salvaged corrupt file), oldest first."""
        async with self._lock:
            rows = await self._read(
                "SELECT id, kind, created_at, message, detail FROM notices"
                " WHERE acknowledged_at IS NULL AND kind <> ? ORDER BY id", (SALVAGE_PENDING,))
        return [Notice(r[0], r[1], r[2], r[3], msgpack.unpackb(r[4])) for r in rows]

    async def acknowledge_notices(self, now: float | None = None) -> int:
        """Mark every notice seen; returns how many were open."""
        async with self._lock, self._write():
            cur = await self._db.execute(
                "UPDATE notices SET acknowledged_at = ? WHERE acknowledged_at IS NULL"
                " AND kind <> ?", (time.time() if now is None else now, SALVAGE_PENDING))
            return cur.rowcount

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
            raise translate(exc, self.path) from exc

    # --- shelving ---
    # The shelves table (buffer/shelves.py): written by `plantbridge shelve` beside the daemon,
    # read by the daemon every second.

    async def shelve(self, shelf: Shelf) -> None:
        """Shelve a rule or an asset until `shelf.until` (replaces an earlier shelf of it)."""
        async with self._lock, self._write():
            await shelf_table.put(self._db, shelf)

    async def unshelve(self, target: str, kind: str | None = None) -> int:
        """End the shelf of a rule or asset now; returns how many shelves ended."""
        async with self._lock, self._write():
            return await shelf_table.remove(self._db, kind, target)

    async def shelves(self, now: float | None = None) -> list[Shelf]:
        """Shelves in force at `now` (default: the wall clock), soonest expiry first."""
        when = time.time() if now is None else now
        async with self._lock:
            return await self._query(shelf_table.active(self._db, when))

    async def prune_shelves(self, before: float) -> int:
        """Forget shelves that expired before `before`."""
        async with self._lock, self._write():
            return await shelf_table.prune(self._db, before)

    async def state_row(self, rule_id: str, asset: str) -> object | None:
        """The data of one stored rule-state row, None when there is none (the roll-up's link
        of a rolled-up episode to its incident is one: rule id "*rollup", asset the episode)."""
        async with self._lock:
            rows = await self._read(
                "SELECT data FROM rule_state WHERE rule_id = ? AND asset = ?", (rule_id, asset))
        return msgpack.unpackb(rows[0][0]) if rows else None

    async def prune_state_rows(self, rule_id: str, before: float) -> int:
        """Forget rows of one (non-rule) rule id not written since `before`."""
        async with self._lock, self._write():
            cur = await self._db.execute(
                "DELETE FROM rule_state WHERE rule_id = ? AND updated_at < ?", (rule_id, before))
            return cur.rowcount
