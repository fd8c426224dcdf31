"""Operator views of the outbox: dead letters (list, requeue, drop) and notices (what opening
found damaged, until acknowledged). Used by the CLI and the status page."""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgpack

from buffer.base import StoreBase, chunks, placeholders
from buffer.records import DeadLetter, Notice
from buffer.salvage import SALVAGE_PENDING
from gateway.model import MessageKind


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
