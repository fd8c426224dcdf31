"""Operator views of the outbox: dead letters (list, requeue, drop), notices (what opening
found damaged, until acknowledged), and the delivery attempt history behind `trace`. Used by
the CLI and the status page."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import msgpack

from buffer import attempts as history
from buffer import shelves as shelf_table
from buffer.attempts import STATE_NAMES, Attempt, MessageFacts, StoredRecord, Trace
from buffer.base import StoreBase, chunks, placeholders, translate
from buffer.budget import delete_rows, find_room, row_bytes
from buffer.errors import BufferFull
from buffer.records import DeadLetter, Notice
from buffer.salvage import SALVAGE_PENDING
from buffer.schema import DEAD, PENDING
from buffer.shelves import Shelf
from buffer.statements import INSERT, priority_of
from gateway.model import MessageClass, MessageKind, OutboxMessage

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

    # --- upstream status and reconciliation ---
    # For gateway/asset_status.py (northbound status, coalesced), gateway/status_poll.py (what
    # the upstream says of our records) and gateway/reconcile.py (`plantbridge reconcile`).

    async def replace_pending_status(self, message: OutboxMessage) -> int:
        """Enqueue one asset status message and drop, in the same transaction, every older
        still-pending status record of the same sink and asset: an outage leaves one pending
        status per (asset, sink), the latest. Returns how many were dropped.

        Under the budget the message is a STATUS-class record: it may shed telemetry or older
        status, never an event; raises BufferFull (nothing written) when it does not fit. A
        record already leased by the forwarder may still go out once: its settle then misses.
        """
        if message.message_class is not MessageClass.STATUS:
            raise ValueError("replace_pending_status takes STATUS-class messages only")
        body = self._packer.pack(dict(message.body))
        size = row_bytes(message, body)
        async with self._lock:
            await self._sync_used()
            async with self._write():
                dropped = list(await self._db.execute_fetchall(
                    "DELETE FROM outbox WHERE state = 0 AND sink = ? AND asset = ? AND class = ?"
                    " AND key <> ? RETURNING size",
                    (message.sink, message.asset, int(MessageClass.STATUS), message.key)))
                freed = sum(r[0] for r in dropped)
                exists = await self._db.execute_fetchall(
                    "SELECT 1 FROM outbox WHERE key = ?", (message.key,))
                added = 0 if exists else size
                room = None
                over = (self._used - freed + added - self.max_bytes
                        if self.max_bytes is not None and added else 0)
                if over > 0:
                    room = await find_room(self._db, over, [MessageClass.STATUS])
                    if room.short > 0:
                        self._refused += 1
                        raise BufferFull(1, self._used, self.max_bytes or 0)
                    await delete_rows(self._db, room.victims)
                if added:
                    await self._db.execute(INSERT, _insert_row(message, body, size))
            self._used += added - freed - (room.freed if room is not None else 0)
            if room is not None:
                self._pressure = True
                for cls, n in room.shed.items():
                    self._shed[cls] = self._shed.get(cls, 0) + n
                self._forgotten += room.forgotten
        return len(dropped)

    async def record_upstream_status(self, rows: Sequence[UpstreamStatusRow]) -> int:
        """Store states seen upstream; a (sink, episode, state) already stored keeps its first
        time. Rows older than the outbox's retention go in the same transaction, but for open
        episodes. Returns how many were new."""
        if not rows:
            return 0
        oldest = min(r.seen_at for r in rows) - self.retention_seconds
        async with self._lock, self._write():
            await self._db.execute(
                "DELETE FROM upstream_status WHERE seen_at < ? AND episode_id NOT IN"
                " (SELECT episode_id FROM episodes WHERE cleared_at IS NULL)", (oldest,))
            n = 0
            for r in rows:
                cur = await self._db.execute(
                    "INSERT OR IGNORE INTO upstream_status (sink, episode_id, receipt, state, raw,"
                    " seen_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (r.sink, r.episode_id, r.receipt, r.state, r.raw, r.seen_at))
                n += cur.rowcount
            return n

    async def upstream_status(self, *, episode_id: str | None = None,
                              limit: int = 1000) -> list[UpstreamStatusRow]:
        """The status history seen upstream (one episode's, or the newest `limit` rows)."""
        where, args = ("WHERE episode_id = ?", (episode_id,)) if episode_id else ("", ())
        async with self._lock:
            rows = await self._read(
                "SELECT sink, episode_id, receipt, state, raw, seen_at FROM upstream_status"
                f" {where} ORDER BY seen_at DESC LIMIT ?", (*args, limit))
        return sorted((UpstreamStatusRow(*r) for r in rows), key=lambda r: r.seen_at)

    async def tracked_records(self, sink: str, since: float,
                              limit: int = 500) -> list[TrackedRecord]:
        """Records `sink` created for us (a receipt) whose episode is open, or was raised after
        `since` and not yet seen completed upstream: what the status poller asks about."""
        async with self._lock:
            rows = await self._read(
                "SELECT e.episode_id, e.rule_id, e.asset, r.receipt, e.raised_at, e.cleared_at"
                " FROM receipts r JOIN episodes e ON e.episode_id = r.episode_id"
                " WHERE r.sink = ? AND (e.cleared_at IS NULL OR e.raised_at >= ?)"
                " AND (e.cleared_at IS NULL OR NOT EXISTS (SELECT 1 FROM upstream_status s"
                "   WHERE s.sink = r.sink AND s.episode_id = r.episode_id"
                "   AND s.state = 'completed'))"
                " ORDER BY e.raised_at LIMIT ?", (sink, since, limit))
        return [TrackedRecord(sink, *r) for r in rows]

    async def open_reraise_episode(self, episode_id: str, rule_id: str, asset: str,
                                   raised_at: float, severity: int) -> None:
        """The episode row of a request raised again (status poll, `closed_upstream =
        "new_request"`, id `<episode>~re<8 hex>`): open, beside the still open episode of the
        same rule and asset, which it must not supersede (the `episodes_supersede` trigger
        fires for rows inserted open, so it is inserted closed and opened in the same
        transaction). `open_episodes` leaves such rows out: no rule holds them; the gateway
        closes one, with its clear, when its parent closes. Known already: nothing changes."""
        async with self._lock, self._write():
            cur = await self._db.execute(
                "INSERT OR IGNORE INTO episodes (episode_id, rule_id, asset, raised_at, severity,"
                " cleared_at) VALUES (?, ?, ?, ?, ?, -1)",
                (episode_id, rule_id, asset, raised_at, severity))
            if cur.rowcount:
                await self._db.execute(
                    "UPDATE episodes SET cleared_at = NULL WHERE episode_id = ?", (episode_id,))

    async def open_reraises(self) -> list[ReraiseEpisode]:
        """Every open re-raise episode, with the sinks its request went to and whether (and
        when) its parent episode closed."""
        async with self._lock:
            rows = await self._read(
                "SELECT c.episode_id, c.rule_id, c.asset, c.raised_at, c.severity,"
                " p.episode_id IS NOT NULL, p.cleared_at,"
                " (SELECT group_concat(sink, ' ') FROM (SELECT o.sink FROM outbox o"
                "   WHERE o.episode_id = c.episode_id AND o.kind = ? UNION"
                "   SELECT r.sink FROM receipts r WHERE r.episode_id = c.episode_id))"
                " FROM episodes c LEFT JOIN episodes p"
                "   ON p.episode_id = substr(c.episode_id, 1, length(c.episode_id) - 11)"
                " WHERE c.cleared_at IS NULL AND c.episode_id GLOB ?",
                (MessageKind.MAINTENANCE_REQUEST.value, RERAISE_GLOB))
        return [ReraiseEpisode(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6],
                               tuple(sorted(str(r[7] or "").split()))) for r in rows]

    async def episodes_with_requests(self, since: float,
                                     limit: int = 10000) -> list[EpisodeRequest]:
        """Episodes raised since `since`, each with the maintenance request of every sink it
        was enqueued for: the local side of `plantbridge reconcile`."""
        request = MessageKind.MAINTENANCE_REQUEST.value
        async with self._lock:
            rows = await self._read(
                "SELECT e.episode_id, e.rule_id, e.asset, e.raised_at, e.severity, e.cleared_at,"
                " o.sink, o.id, o.key, o.state, r.receipt FROM episodes e"
                " JOIN outbox o ON o.episode_id = e.episode_id AND o.kind = ?"
                " LEFT JOIN receipts r ON r.sink = o.sink AND r.episode_id = e.episode_id"
                " WHERE e.raised_at >= ? ORDER BY e.raised_at, o.sink LIMIT ?",
                (request, since, limit))
        return [EpisodeRequest(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8],
                               STATE_NAMES[r[9]], r[10]) for r in rows]

    async def episode_steps(self, episode_ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
        """(kind, state) of every outbox row of these episode ids (lanes such as the parts
        chain's `<episode>#parts` included when asked for by that id)."""
        out: dict[str, list[tuple[str, str]]] = {}
        async with self._lock:
            for chunk in chunks(list(dict.fromkeys(episode_ids))):
                rows = await self._read(
                    "SELECT episode_id, kind, state FROM outbox WHERE episode_id IN"
                    f" ({placeholders(len(chunk))}) ORDER BY id", chunk)
                for ep, kind, state in rows:
                    out.setdefault(ep, []).append((kind, STATE_NAMES[state]))
        return out

    async def resend_request(self, message: OutboxMessage) -> str:
        """Send a maintenance request again under its original key (`reconcile --fix`).

        A dead letter is made pending again ("requeued"); a pending one is left ("pending");
        a delivered one (its body is gone) is replaced by `message`, and the episode's receipt
        for that sink forgotten so the new upstream id becomes the receipt ("re-enqueued").
        """
        body = self._packer.pack(dict(message.body))
        size = row_bytes(message, body)
        async with self._lock:
            await self._sync_used()
            async with self._write():
                rows = list(await self._db.execute_fetchall(
                    "SELECT id, state, size FROM outbox WHERE key = ?", (message.key,)))
                state = rows[0][1] if rows else None
                if state == PENDING:
                    return "pending"
                if state == DEAD:
                    await self._db.execute(
                        "UPDATE outbox SET state = 0, attempts = 0, next_attempt_at = 0,"
                        " settled_at = NULL WHERE id = ?", (rows[0][0],))
                    return "requeued"
                freed = 0
                if rows:
                    freed = rows[0][2]
                    await self._db.execute("DELETE FROM outbox WHERE id = ?", (rows[0][0],))
                await self._db.execute("DELETE FROM receipts WHERE sink = ? AND episode_id = ?",
                                       (message.sink, message.episode_id))
                await self._db.execute(INSERT, _insert_row(message, body, size))
            self._used += size - freed
        return "re-enqueued"

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


def _insert_row(message: OutboxMessage, body: bytes, size: int) -> tuple[object, ...]:
    """The parameters of INSERT for one message, as `OutboxStore.commit` builds them."""
    return (message.key, message.sink, message.asset, message.episode_id, str(message.kind),
            int(message.message_class), message.created_at, body, size,
            int(priority_of(message)))


# Episode ids of requests raised again (gateway/status_poll.py `reraise_episode_id`): the
# parent's id, "~re" and 8 hex digits (11 characters). A rule's own episode ids end in digits.
RERAISE_GLOB = "*~re" + "[0-9a-f]" * 8


@dataclass(frozen=True, slots=True)
class ReraiseEpisode:
    episode_id: str
    rule_id: str
    asset: str
    raised_at: float
    severity: int
    parent_known: bool  # the parent's row is still there (closed ones go with the retention)
    parent_cleared_at: float | None
    sinks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UpstreamStatusRow:
    """One state of one record upstream, first seen at `seen_at`."""

    sink: str
    episode_id: str
    receipt: str
    state: str
    raw: str
    seen_at: float


@dataclass(frozen=True, slots=True)
class TrackedRecord:
    sink: str
    episode_id: str
    rule_id: str
    asset: str
    receipt: str
    raised_at: float
    cleared_at: float | None


@dataclass(frozen=True, slots=True)
class EpisodeRequest:
    episode_id: str
    rule_id: str
    asset: str
    raised_at: float
    severity: int
    cleared_at: float | None
    sink: str
    record_id: int
    key: str
    state: str  # pending | delivered | dead
    receipt: str | None
