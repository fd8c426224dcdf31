"""What the outbox forgets once it is older than the retention (7 days by default)."""

from __future__ import annotations

import aiosqlite

from buffer.attempts import PRUNE_SQL as ATTEMPTS_PRUNE_SQL


async def prune(db: aiosqlite.Connection, cutoff: float) -> int:
    """Inside the caller's transaction, forget delivered keys, closed episodes, their receipts
    and acknowledged notices settled before `cutoff`; returns the tracked bytes freed."""
    rows = await db.execute_fetchall(
        "SELECT COALESCE(sum(size), 0) FROM outbox WHERE state = 1 AND settled_at < ?",
        (cutoff,))
    pruned = int(next(iter(rows))[0])
    await db.execute("DELETE FROM outbox WHERE state = 1 AND settled_at < ?", (cutoff,))
    await db.execute(
        "DELETE FROM episodes WHERE cleared_at IS NOT NULL AND cleared_at < ?", (cutoff,))
    await db.execute(
        "DELETE FROM receipts WHERE stored_at < ?"
        " AND episode_id NOT IN (SELECT episode_id FROM episodes)"
        " AND episode_id NOT IN (SELECT episode_id FROM outbox WHERE state <> 1)",
        (cutoff,))
    await db.execute("DELETE FROM notices WHERE acknowledged_at < ?", (cutoff,))
    for sql in ATTEMPTS_PRUNE_SQL:  # attempt history goes with the records it describes
        await db.execute(sql, (cutoff,))
    return pruned
