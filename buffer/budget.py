"""The size budget: what a row is counted as, and which rows make room for new ones.

The budget is enforced against *tracked bytes*: an estimate of each stored row (body, key twice
for the unique index, the text columns, and a fixed per-row overhead), kept as a running total.
It is deterministic and cheap, unlike the file size, which only shrinks at checkpoints and whose
free pages are reused rather than returned. The file on disk is larger than the tracked figure
(page slack, WAL): size the budget at about half the space the outbox may use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from gateway.model import MessageClass, OutboxMessage

ROW_OVERHEAD_BYTES = 64
SHEDDABLE = (MessageClass.TELEMETRY, MessageClass.STATUS)  # in shedding order
_CHUNK = 500


def row_bytes(message: OutboxMessage, body: bytes) -> int:
    """Tracked size of a stored row; a delivered row keeps this minus len(body)."""
    return (len(body) + 2 * len(message.key) + len(message.sink) + len(message.asset)
            + len(message.episode_id) + len(message.kind) + ROW_OVERHEAD_BYTES)


@dataclass(slots=True)
class Room:
    """What making room decided: rows to delete, bytes they free, counts per class shed."""

    victims: list[int]
    freed: int
    shed: dict[MessageClass, int]
    short: int  # bytes still over budget after shedding everything allowed (<= 0: it fits)
    forgotten: int = 0  # delivered rows whose keys were dropped early

    def take(self, row_id: int, size: int) -> None:
        self.victims.append(row_id)
        self.freed += size
        self.short -= size


async def find_room(db: aiosqlite.Connection, need: int,
                    new_classes: Sequence[MessageClass]) -> Room:
    """Choose rows to delete that free at least `need` bytes, losing as little as possible.

    First the keys of delivered telemetry and status rows, oldest settled first (nothing is
    lost: only their deduplication memory goes; delivered events keep theirs, they guard against
    a duplicate maintenance request). Then undelivered telemetry, then status, oldest first.
    New rows displace only their own class or lower: telemetry never evicts status; events,
    never shed themselves, may displace both.
    """
    room = Room([], 0, {}, need)
    last: tuple[float, int] = (float("-inf"), 0)
    while room.short > 0:
        rows = await db.execute_fetchall(
            "SELECT id, size, settled_at FROM outbox WHERE state = 1 AND class < ?"
            " AND (settled_at, id) > (?, ?) ORDER BY settled_at, id LIMIT ?",
            (int(MessageClass.EVENT), *last, _CHUNK))
        if not rows:
            break
        for row_id, size, settled_at in rows:
            last = (settled_at, row_id)
            room.take(row_id, size)
            room.forgotten += 1
            if room.short <= 0:
                break
    top = max(new_classes)
    for cls in SHEDDABLE:
        if cls > top or room.short <= 0:
            break
        after = 0
        while room.short > 0:
            rows = await db.execute_fetchall(
                "SELECT id, size FROM outbox WHERE state <> 1 AND class = ? AND id > ?"
                " ORDER BY id LIMIT ?", (int(cls), after, _CHUNK))
            if not rows:
                break
            for row_id, size in rows:
                after = row_id
                room.take(row_id, size)
                room.shed[cls] = room.shed.get(cls, 0) + 1
                if room.short <= 0:
                    break
    return room


async def delete_rows(db: aiosqlite.Connection, ids: Sequence[int]) -> None:
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        await db.execute(
            f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk)
