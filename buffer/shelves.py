"""Shelves: a technician mutes a nuisance rule or asset until a time (ISA-18.2 shelving).

The CLI writes this small table beside the running daemon (WAL: a second connection may write);
the daemon reads it every second. A shelf is keyed by what it mutes: (`kind`, `target`), kind
"rule" or "asset"; shelving the same target again replaces the expiry and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

KINDS = ("rule", "asset")

# The table: `_V_SHELVES` in buffer/schema.py.


@dataclass(frozen=True, slots=True)
class Shelf:
    kind: str  # "rule" | "asset"
    target: str
    until: float
    reason: str
    shelved_by: str
    created_at: float

    def covers(self, rule_id: str, asset: str) -> bool:
        return self.target == (rule_id if self.kind == "rule" else asset)


async def put(db: aiosqlite.Connection, shelf: Shelf) -> None:
    if shelf.kind not in KINDS:
        raise ValueError(f"shelf kind must be one of {KINDS}, not {shelf.kind!r}")
    await db.execute(
        "INSERT INTO shelves (kind, target, until, reason, shelved_by, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, target) DO UPDATE SET"
        " until = excluded.until, reason = excluded.reason,"
        " shelved_by = excluded.shelved_by, created_at = excluded.created_at",
        (shelf.kind, shelf.target, shelf.until, shelf.reason, shelf.shelved_by,
         shelf.created_at))


async def remove(db: aiosqlite.Connection, kind: str | None, target: str) -> int:
    """Delete the shelf of `target` (of either kind when `kind` is None); returns how many."""
    if kind is None:
        cur = await db.execute("DELETE FROM shelves WHERE target = ?", (target,))
    else:
        cur = await db.execute("DELETE FROM shelves WHERE kind = ? AND target = ?",
                               (kind, target))
    return cur.rowcount


async def active(db: aiosqlite.Connection, now: float) -> list[Shelf]:
    """Shelves not yet expired at `now`, soonest expiry first."""
    rows = await db.execute_fetchall(
        "SELECT kind, target, until, reason, shelved_by, created_at FROM shelves"
        " WHERE until > ? ORDER BY until, kind, target", (now,))
    return [Shelf(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


async def prune(db: aiosqlite.Connection, before: float) -> int:
    """Forget shelves that expired before `before`."""
    cur = await db.execute("DELETE FROM shelves WHERE until < ?", (before,))
    return cur.rowcount
