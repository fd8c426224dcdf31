"""The transactional outbox: append (with the episode state it implies), lease, settle.

One aiosqlite connection in WAL mode, every operation under one asyncio lock, every write one
explicit transaction. A record leaves the pending state only when settled: ACCEPTED (delivered;
the row keeps its key, without body, so re-enqueueing the same key stays a no-op until the
retention prunes it) or REJECTED (dead letter, until requeued or dropped). Lease is a read: the
caller (one forwarder per sink) settles what it leased; anything unsettled is simply leased
again, so delivery is at least once and the sink's idempotency makes it once in effect.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import orjson

from buffer.attempts import STATE_NAMES
from buffer.base import chunks, placeholders, translate
from buffer.budget import ROW_OVERHEAD_BYTES, Room, delete_rows, find_room, row_bytes
from buffer.errors import BufferFull
from buffer.opening import open_outbox
from buffer.operator import RERAISE_GLOB, OperatorViews
from buffer.records import OutboxStats, PreparedCommit, StatusRows, Synchronous, UrgentRecord
from buffer.schema import DEAD, PENDING
from buffer.sending import OutboxSending
from buffer.state import (
    DELETE_STATE,
    LOAD_MARKS,
    LOAD_STATES,
    UPSERT_MARK,
    UPSERT_STATE,
    StateRows,
    mark_row,
    rule_state_row,
)
from buffer.statements import (
    ADD_RECEIPT,
    COLUMNS_OF,
    EPISODE,
    INSERT,
    SETTLE_ACCEPTED,
    SETTLE_DEAD,
    SETTLE_RETRY,
    append_in_one,
    priority_of,
    settle_rows,
)
from buffer.stats import DEFAULT_STUCK_AFTER_SECONDS, sink_figures
from gateway.model import (
    Delivery,
    EpisodeState,
    MessageClass,
    MessageKind,
    OutboxMessage,
    RuleState,
    SampleMark,
    Transition,
    TransitionKind,
)

__all__ = ["OutboxStore", "Synchronous"]

DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600.0
# SQLite's page cache for the connection (its default is 2 MiB). A burst commits groups of
# thousands of records, and each dirties pages all over the random-keyed indexes (idempotency
# key, episode): with a cache smaller than that, pages spill to the WAL mid-transaction and are
# written again and read back. Measured (benchmarks/pipeline_bench.py, groups of 4,000): 16 MiB
# writes 9.0 KB and reads 2.2 KB per transition where 2 MiB wrote 13.1 KB and read 9.5 KB (an
# SD card wears by what is written), for 15 MB more RSS once the cache has filled.
CACHE_KIB = 16 * 1024
# Checkpoint the WAL into the file every 8,000 pages (32 MB at 4 KiB) instead of SQLite's 1,000:
# a burst of 4,000-transition groups checkpointed after nearly every commit, each time copying
# pages the next commit dirtied again. Measured (benchmarks/pipeline_bench.py, quiet box):
# 44-47k -> 52-55k transitions/s. The cost: up to ~32 MB more on disk between checkpoints, and
# that much WAL to read back after a power cut.
WAL_AUTOCHECKPOINT_PAGES = 8000


class OutboxStore(OutboxSending, OperatorViews):
    """The durable outbox over one SQLite file. Open with `await OutboxStore.open(path)`."""

    @classmethod
    async def open(cls, path: Path, *, synchronous: Synchronous = Synchronous.FULL,
                   max_bytes: int | None = None,
                   retention_seconds: float = DEFAULT_RETENTION_SECONDS,
                   lock: bool = False) -> Self:
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
            # after the checks at open (which read the whole file), so it fills only with use
            await opened.db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            await opened.db.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        except sqlite3.Error as exc:
            raise translate(exc, path) from exc
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
        writing) for a state msgpack cannot encode. The same as
        `await commit_prepared(prepare(...))`.
        """
        return await self.commit_prepared(self.prepare(transitions, messages, states, marks))

    def prepare(self, transitions: Sequence[Transition], messages: Sequence[OutboxMessage],
                states: Sequence[RuleState] = (), marks: Sequence[SampleMark] = ()
                ) -> PreparedCommit:
        """Encode what `commit` would write (no I/O, on the caller's thread): bodies and
        states packed, parameter rows built. Raises ValueError for a state msgpack cannot
        encode. The result may be committed later, and again after a failed attempt."""
        state_rows = StateRows(self._packer, states, marks, time.time())
        pack = self._packer.pack
        columns = COLUMNS_OF
        seen: set[str] = set()
        rows: list[tuple[Any, ...]] = []
        total = 0
        for m in messages:
            key = m.key
            if key in seen:
                continue
            seen.add(key)
            body = m.body
            blob = pack(body if type(body) is dict else dict(body))
            kind, kind_len, cls, implied = columns[m.kind, m.message_class]
            # row_bytes(m, blob), spelt out: this runs once per message of every group
            size = (len(blob) + 2 * len(key) + len(m.sink) + len(m.asset) + len(m.episode_id)
                    + kind_len + ROW_OVERHEAD_BYTES)
            total += size
            rows.append((key, m.sink, m.asset, m.episode_id, kind, cls, m.created_at, blob, size,
                         implied if m.priority is None else int(m.priority)))
        raised = TransitionKind.RAISED
        episodes = tuple([(t.episode_id, t.rule_id, t.asset, t.ts, t.severity,
                           None if t.kind is raised else t.ts) for t in transitions])
        return PreparedCommit(tuple(rows), total, episodes,
                              tuple(state_rows.upserts), tuple(state_rows.deletes),
                              tuple(state_rows.marks))

    async def commit_prepared(self, prepared: PreparedCommit) -> int:
        """Write a `prepare`d commit in one transaction; returns how many messages were new.
        Raises as `commit` does (ValueError excepted: that is `prepare`'s)."""
        if not prepared.appends:
            if prepared:  # the common case of a busy plant: state only, no budget work
                async with self._lock:
                    await self._in_thread(functools.partial(append_in_one, prepared=prepared))
            return 0
        async with self._lock:
            await self._sync_used()
            if self.max_bytes is None or self._used + prepared.message_bytes <= self.max_bytes:
                # room for all of it, stored keys or not: the whole transaction in one call
                # on the database thread
                count, added = await self._in_thread(
                    functools.partial(append_in_one, prepared=prepared))
                self._used += added
                if count:
                    self._pressure = False
                return count
            return await self._commit_making_room(prepared)

    async def _commit_making_room(self, prepared: PreparedCommit) -> int:
        """`commit_prepared` near the budget: find what is new, shed for it, then write."""
        room: Room | None = None
        try:
            async with self._write():
                existing = await self._existing_keys([r[0] for r in prepared.message_rows])
                new = [row for row in prepared.message_rows if row[0] not in existing]
                added = sum(row[8] for row in new)  # the size column
                over = (self._used + added - self.max_bytes
                        if self.max_bytes is not None and new else 0)
                if over > 0:
                    room = await self._make_room(over, [MessageClass(row[5]) for row in new])
                if new:
                    await self._db.executemany(INSERT, new)
                if prepared.episode_rows:
                    await self._db.executemany(EPISODE, prepared.episode_rows)
                for sql, params in ((UPSERT_STATE, prepared.state_upserts),
                                    (DELETE_STATE, prepared.state_deletes),
                                    (UPSERT_MARK, prepared.mark_rows)):
                    if params:
                        await self._db.executemany(sql, params)
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

    async def _make_room(self, over: int, new: Sequence[MessageClass]) -> Room:
        room = await find_room(self._db, over, new)
        if room.short > 0 and any(c is not MessageClass.EVENT for c in new):
            assert self.max_bytes is not None
            raise BufferFull(sum(1 for c in new if c is not MessageClass.EVENT),
                             self._used, self.max_bytes)
        await delete_rows(self._db, room.victims)
        return room

    async def _existing_keys(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(keys):
            rows = await self._db.execute_fetchall(
                f"SELECT key FROM outbox WHERE key IN ({placeholders(len(chunk))})", chunk)
            found.update(r[0] for r in rows)
        return found

    async def open_episodes(self) -> list[EpisodeState]:
        """Episodes raised and not yet cleared, oldest first: restored into rules at start."""
        async with self._lock:
            rows = await self._read(
                "SELECT rule_id, asset, episode_id, raised_at, severity FROM episodes"
                " WHERE cleared_at IS NULL AND episode_id NOT GLOB ?"  # re-raises: no rule's
                " ORDER BY raised_at, episode_id", (RERAISE_GLOB,))
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
            stuck_by_class=fig.stuck_by_class,
        )

    # --- status page ---
    # Small reads for the status page, `/readyz` and `plantbridge status`; all bounded.

    async def status_rows(self, now: float, urgent_after_seconds: float,
                          urgent_severity: int = 1) -> StatusRows:
        """Upstream ids, request facts and undelivered requests of open episodes, and the
        maintenance requests of severity <= `urgent_severity` still pending or dead more than
        `urgent_after_seconds` after they were committed."""
        open_only = " JOIN episodes e ON e.episode_id = {t}.episode_id WHERE e.cleared_at IS NULL"
        request = MessageKind.MAINTENANCE_REQUEST.value
        async with self._lock:
            receipts = await self._read("SELECT r.sink, r.episode_id, r.receipt FROM receipts r"
                                        + open_only.format(t="r") + " LIMIT 1000")
            facts = await self._read("SELECT f.episode_id, f.facts FROM attempt_facts f"
                                     + open_only.format(t="f") + " LIMIT 1000")
            undelivered = await self._read(
                "SELECT o.sink, o.episode_id, o.state FROM outbox o" + open_only.format(t="o")
                + " AND o.state IN (?, ?) AND o.kind = ? LIMIT 1000", (PENDING, DEAD, request))
            urgent = await self._read(
                "SELECT o.sink, o.asset, o.episode_id, o.state, o.created_at, o.last_error,"
                " e.severity FROM outbox o JOIN episodes e ON e.episode_id = o.episode_id"
                " WHERE o.state IN (?, ?) AND o.kind = ? AND e.severity <= ?"
                " AND o.created_at <= ? ORDER BY o.created_at LIMIT 50",
                (PENDING, DEAD, request, urgent_severity, now - urgent_after_seconds))
        said: dict[str, dict[str, object]] = {}
        for episode_id, text in facts:
            with contextlib.suppress(orjson.JSONDecodeError):
                doc = orjson.loads(text)
                if isinstance(doc, dict) and "status" not in doc:  # the raise, not a clear
                    said.setdefault(episode_id, doc)
        return StatusRows(
            receipts={(sink, ep): receipt for sink, ep, receipt in receipts},
            facts=said,
            undelivered={(sink, ep): STATE_NAMES[st] for sink, ep, st in undelivered},
            urgent=[UrgentRecord(r[0], r[1], r[2], STATE_NAMES[r[3]], r[4], r[5], r[6])
                    for r in urgent])

    # --- workflow follow-ups ---

    async def settle_with_follow_ups(self, deliveries: Sequence[Delivery], now: float,
                                     follow_ups: Sequence[tuple[int, OutboxMessage]]) -> int:
        """`settle`, and in the same transaction enqueue each follow-up message whose
        triggering record (the int) was pending and is settled ACCEPTED now; returns how many
        were new. A crash before the commit leaves the trigger pending (sent again, the same
        follow-ups computed again); after it, both are there: never lost, never doubled (keys
        are deterministic and already stored keys are ignored). Follow-ups are never shed."""
        first: dict[int, Delivery] = {}
        for d in deliveries:
            first.setdefault(d.record_id, d)
        async with self._lock:
            await self._sync_used()
            async with self._write():
                live: dict[int, tuple[str, str, int]] = {}
                for chunk in chunks(list(first)):
                    rows = await self._db.execute_fetchall(
                        "SELECT id, sink, episode_id, COALESCE(length(body), 0) FROM outbox"
                        f" WHERE state = 0 AND id IN ({placeholders(len(chunk))})", chunk)
                    live.update((r[0], (r[1], r[2], r[3])) for r in rows)
                ok, receipts, dead, retry, freed = settle_rows(live, first, now)
                await self._db.executemany(SETTLE_ACCEPTED, ok)
                await self._db.executemany(ADD_RECEIPT, receipts)
                await self._db.executemany(SETTLE_DEAD, dead)
                await self._db.executemany(SETTLE_RETRY, retry)
                accepted = {rid for _, rid in ok}
                due = {m.key: m for rid, m in follow_ups if rid in accepted}
                existing = await self._existing_keys(list(due))
                new = []
                for m in due.values():
                    if m.key not in existing:
                        body = self._packer.pack(dict(m.body))
                        new.append((m.key, m.sink, m.asset, m.episode_id, str(m.kind),
                                    int(m.message_class), m.created_at, body, row_bytes(m, body),
                                    int(priority_of(m))))
                await self._db.executemany(INSERT, new)
                pruned = await self._maybe_prune(now)
            self._used += sum(row[-2] for row in new) - freed - pruned
        return len(new)
