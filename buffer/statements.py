"""The SQL of the hot paths, kept apart from the transaction logic that runs it."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Collection, Sequence
from itertools import chain
from typing import Any

import msgpack
import orjson

from buffer.attempts import HistoryRows
from buffer.records import PreparedCommit
from buffer.state import DELETE_STATE, UPSERT_MARK, UPSERT_STATE
from gateway.model import (
    Delivery,
    MessageClass,
    MessageKind,
    OutboxMessage,
    OutboxRecord,
    Outcome,
    Priority,
)

DEFAULT_RETRY_SECONDS = 1.0

INSERT = (
    "INSERT INTO outbox (key, sink, asset, episode_id, kind, class, created_at, body, size,"
    " priority) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
EPISODE = (
    "INSERT INTO episodes (episode_id, rule_id, asset, raised_at, severity, cleared_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (episode_id) DO UPDATE"
    " SET cleared_at = COALESCE(episodes.cleared_at, excluded.cleared_at)"
)
# Due heads of line per (sink, episode), most urgent first (gateway.model.Priority), then oldest:
# a pending record of the sink whose episode has no older pending record there. Walks the
# sink's pending index in (priority, id) order and checks each with one seek, stopping after
# `limit` heads: a lease costs O(limit + skipped), where only heads that are not due (retrying)
# or records queued behind a head are stepped over, whatever the size of the backlog.
# Order holds within an episode (a clear waits until its raise is settled: delivered or dead),
# whatever their priorities; other episodes, also of the same asset, never wait on it. The seek
# repeats the per-episode index's leading expression (buffer/schema.py, V9) to use it.
LEASE = """
SELECT o.id, o.key, o.sink, o.asset, o.episode_id, o.kind, o.class, o.created_at, o.body,
       o.attempts, r.receipt, o.sent_at, o.priority
FROM outbox o INDEXED BY outbox_sink_pending
LEFT JOIN receipts r ON r.sink = o.sink AND r.episode_id = o.episode_id
WHERE o.state = 0 AND o.sink = :sink AND o.next_attempt_at <= :now
  AND NOT EXISTS (SELECT 1 FROM outbox p INDEXED BY outbox_episode_heads
                  WHERE p.state = 0 AND p.sink = :sink
                  AND substr(p.episode_id, -13) = substr(o.episode_id, -13)
                  AND p.episode_id = o.episode_id AND p.id < o.id)
ORDER BY o.priority, o.id LIMIT :limit
"""
# LEASE for a forwarder about to send: records it marked sent itself (after :since, when it
# started) are under way and skipped in SQL, so a lease does not read and hand over the whole
# window in flight again only for the caller to drop it. Records marked by an earlier life (a
# kill -9 mid-send) are at or before :since and leased as usual; so are its own marks at
# exactly :since (a clock that did not move), which the caller's `exclude` drops.
LEASE_UNSENT = LEASE.replace(
    "WHERE o.state = 0 AND o.sink = :sink AND o.next_attempt_at <= :now",
    "WHERE o.state = 0 AND o.sink = :sink AND o.next_attempt_at <= :now"
    " AND (o.sent_at IS NULL OR o.sent_at <= :since)")
assert LEASE_UNSENT != LEASE


def priority_of(m: OutboxMessage) -> Priority:
    """The message's own priority, else the one its kind and class imply."""
    if m.priority is not None:
        return m.priority
    if m.message_class is MessageClass.TELEMETRY:
        return Priority.TELEMETRY
    if m.message_class is MessageClass.STATUS:
        return Priority.STATUS
    return Priority.RAISE if m.kind is MessageKind.MAINTENANCE_REQUEST else Priority.CLEAR


# (kind, class) -> the columns they make: kind text, its length (for the tracked size), class
# number, and the priority they imply; one lookup per message on the append path
COLUMNS_OF: dict[tuple[MessageKind, MessageClass], tuple[str, int, int, int]] = {
    (kind, cls): (kind.value, len(kind.value), int(cls), int(priority_of(
        OutboxMessage("", "", "", "", kind, {}, 0.0, cls))))
    for kind in MessageKind for cls in MessageClass
}


# a row's kind text and class number as the enums, and the priority number they imply: dict
# lookups on the lease path (an Enum call and `priority_of` were a third of a leased record)
_KINDS: dict[str, MessageKind] = {k.value: k for k in MessageKind}
_CLASSES: dict[int, MessageClass] = {int(c): c for c in MessageClass}
_IMPLIED: dict[tuple[str, int], int] = {
    (kind.value, int(cls)): columns[3] for (kind, cls), columns in COLUMNS_OF.items()}


def leased_record(r: Sequence[Any]) -> OutboxRecord:
    """A row of LEASE as the record a sink receives; the message exactly as committed (a
    priority equal to the one its kind and class imply comes back as None, as it is usually
    given)."""
    kind, cls = _KINDS.get(r[5]), _CLASSES.get(r[6])
    if kind is None or cls is None:  # unknown: the enum's own ValueError
        kind, cls = MessageKind(r[5]), MessageClass(r[6])
    implied = _IMPLIED[kind.value, int(cls)]
    return OutboxRecord(
        r[0],
        OutboxMessage(r[1], r[2], r[3], r[4], kind, msgpack.unpackb(r[8]), r[7], cls,
                      None if r[12] == implied else Priority(r[12])),
        r[9], r[10], r[11])


SETTLE_ACCEPTED = (
    "UPDATE outbox SET state = 1, settled_at = ?, sent_at = NULL,"
    " size = size - COALESCE(length(body), 0), body = NULL WHERE id = ?")
# first receipt wins: the raise's id is what later messages must refer to
ADD_RECEIPT = ("INSERT OR IGNORE INTO receipts (sink, episode_id, receipt, stored_at)"
               " VALUES (?, ?, ?, ?)")
SETTLE_DEAD = ("UPDATE outbox SET state = 2, settled_at = ?, last_error = ?, sent_at = NULL,"
               " attempts = attempts + 1 WHERE id = ?")
SETTLE_RETRY = ("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?,"
                " last_error = ?, sent_at = NULL WHERE id = ?")

Rows = list[tuple[Any, ...]]


def settle_rows(live: dict[int, tuple[str, str, int]], first: dict[int, Delivery],
                now: float) -> tuple[Rows, Rows, Rows, Rows, int]:
    """Parameter rows of SETTLE_ACCEPTED, ADD_RECEIPT, SETTLE_DEAD and SETTLE_RETRY for the
    pending records `live` (id -> sink, episode_id, body bytes), and the body bytes freed."""
    ok: Rows = []
    receipts: Rows = []
    dead: Rows = []
    retry: Rows = []
    freed = 0
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
    return ok, receipts, dead, retry, freed


# --- whole transactions, run on the database thread (see StoreBase._in_thread) -------------

# the ids a JSON array: one statement whatever their number (an IN list of ?s made a statement
# per round size, more than the connection's statement cache holds)
LIVE = ("SELECT id, sink, episode_id, COALESCE(length(body), 0) FROM outbox"
        " WHERE state = 0 AND id IN (SELECT value FROM json_each(?))")
MARK_SENT = "UPDATE outbox SET sent_at = ? WHERE id = ? AND state = 0"
# A round's accepts and marks as one statement each, the ids a JSON array (see the note on the
# append below: executemany hands the GIL over once per row, five rows per record in a drain)
SETTLE_ACCEPTED_IDS = SETTLE_ACCEPTED.replace("WHERE id = ?",
                                              "WHERE id IN (SELECT value FROM json_each(?))")
MARK_SENT_IDS = MARK_SENT.replace("WHERE id = ?", "WHERE id IN (SELECT value FROM json_each(?))")
assert SETTLE_ACCEPTED_IDS != SETTLE_ACCEPTED and MARK_SENT_IDS != MARK_SENT


def settle_and_lease_in_one(conn: sqlite3.Connection, first: dict[int, Delivery], now: float,
                            history: Sequence[HistoryRows], lease: dict[str, Any],
                            exclude: Collection[int], limit: int) -> tuple[int, list[Any]]:
    """In the caller's transaction: apply outcomes to the pending records among `first`
    (unknown or settled ids are ignored), append the attempt history rows (statement, rows, pad),
    then LEASE with `lease` params up to `limit` rows not in `exclude` and mark them sent at
    `now`. Returns the body bytes freed and the leased rows."""
    freed = 0
    if first:
        live = {r[0]: (r[1], r[2], r[3])
                for r in conn.execute(LIVE, (orjson.dumps(list(first)),)).fetchall()}
        ok, receipts, dead, retry, freed = settle_rows(live, first, now)
        if ok:
            conn.execute(SETTLE_ACCEPTED_IDS, (now, orjson.dumps([rid for _, rid in ok])))
        insert_rows(conn, ADD_RECEIPT, receipts)  # OR IGNORE: a copy of a row changes nothing
        for sql, params in ((SETTLE_DEAD, dead), (SETTLE_RETRY, retry)):  # rare: row by row
            if params:
                conn.executemany(sql, params)
    for sql, params, pad in history:
        insert_rows(conn, sql, params, pad)
    leased: list[Any] = []
    if limit > 0:
        sql = LEASE_UNSENT if "since" in lease else LEASE
        leased = [r for r in conn.execute(sql, lease).fetchall() if r[0] not in exclude]
        del leased[limit:]
        if leased:
            conn.execute(MARK_SENT_IDS, (now, orjson.dumps([r[0] for r in leased])))
    return freed, leased


# --- the append of a commit group, one transaction on the database thread -------------------
#
# Python's sqlite3 gives the GIL away around every sqlite3_step (and every statement it has to
# prepare) and takes it back after; with executemany that is once per row. While the event
# loop evaluates the next group (pure Python, holding the GIL), each take-back waits up to the
# interpreter's switch interval (5 ms), so a per-row write hardly advances beside evaluation.
# A multi-row INSERT binds all its rows at once and runs as one step, so a group's append
# gives the GIL away about ten times instead of thousands. Statements come in a few shapes
# (row counts), cached by the connection, and a short chunk is padded to its shape: the upserts
# with copies of its last row (they are idempotent), the outbox insert with rows of NULLs that
# its WHERE drops (a copy would take an id of the AUTOINCREMENT sequence).

MAX_ROWS = 1024  # rows per statement: 10,240 parameters for the outbox (SQLite: 32,766+)
STEP = 128  # shapes above STEP: multiples of it; up to it: powers of two (15 per statement)

# INSERT for rows padded with NULLs: VALUES rows come out in order, and so do their ids
APPEND = INSERT.replace(" VALUES (", " SELECT * FROM (VALUES (") + ") WHERE column1 IS NOT NULL"
_NULLS = (None,) * 10
EXISTING = "SELECT key FROM outbox WHERE key IN (SELECT value FROM json_each(?))"


@functools.cache
def _many(one_row_sql: str, rows: int) -> str:
    """`one_row_sql` (one VALUES row of ?s: "(?, ?, ...)") with `rows` such rows."""
    start = one_row_sql.index("(?")
    end = one_row_sql.index(")", start) + 1
    one = one_row_sql[start:end]
    return f"{one_row_sql[:start]}{','.join([one] * rows)}{one_row_sql[end:]}"


def shape(n: int) -> int:
    """Rows of the statement that takes the next `n` (> 0) rows, padding included."""
    if n >= MAX_ROWS:
        return MAX_ROWS
    if n <= STEP:
        return 1 << (n - 1).bit_length()
    return -(-n // STEP) * STEP


def insert_rows(conn: sqlite3.Connection, one_row_sql: str, rows: Sequence[tuple[Any, ...]],
                pad: tuple[Any, ...] | None = None) -> None:
    """Apply `one_row_sql` to every row, in order, in multi-row statements. Rows of one
    statement are applied one after another (conflicts and triggers see the earlier ones), as
    executemany would. A short chunk is padded with `pad`, else with copies of its last row
    (for an idempotent upsert only)."""
    done, n = 0, len(rows)
    while done < n:
        size = shape(n - done)
        chunk = list(rows[done:done + size])
        done += len(chunk)
        chunk.extend([chunk[-1] if pad is None else pad] * (size - len(chunk)))
        conn.execute(_many(one_row_sql, size), list(chain.from_iterable(chunk)))


def append_in_one(conn: sqlite3.Connection, prepared: PreparedCommit) -> tuple[int, int]:
    """In the caller's transaction: the messages whose key is not stored yet, the episode
    rows, rule states and sample marks of `prepared`. Returns (messages added, their tracked
    bytes). The caller has made sure the budget has room for all of them."""
    rows = prepared.message_rows
    new = rows
    if rows:
        keys = orjson.dumps([r[0] for r in rows])  # keys are text: JSON carries them exactly
        existing = {r[0] for r in conn.execute(EXISTING, (keys,))}
        if existing:
            new = tuple(r for r in rows if r[0] not in existing)
    insert_rows(conn, APPEND, new, _NULLS)
    insert_rows(conn, EPISODE, prepared.episode_rows)
    insert_rows(conn, UPSERT_STATE, prepared.state_upserts)
    if prepared.state_deletes:
        conn.executemany(DELETE_STATE, prepared.state_deletes)
    insert_rows(conn, UPSERT_MARK, prepared.mark_rows)
    return len(new), sum(r[8] for r in new)  # the size column
