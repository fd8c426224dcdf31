"""Versioned schema. `PRAGMA user_version` is the version; each step runs in its own transaction.

To change the schema, append a step: never edit a released one. Version N is reached by running
steps 1..N in order, so a file of any earlier version migrates forward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import aiosqlite

APPLICATION_ID = 0x50427478  # "PBtx" in the file header: marks a file as ours

# state of an outbox row
PENDING = 0
DELIVERED = 1
DEAD = 2

_V1 = (
    f"PRAGMA application_id = {APPLICATION_ID}",
    """CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: stale Delivery ids miss
        key TEXT NOT NULL UNIQUE,              -- idempotency key
        sink TEXT NOT NULL,
        asset TEXT NOT NULL,
        episode_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        class INTEGER NOT NULL,                -- MessageClass: shedding order
        created_at REAL NOT NULL,
        body BLOB,                             -- msgpack; NULL once delivered (the key stays)
        size INTEGER NOT NULL,                 -- tracked bytes, for the budget
        state INTEGER NOT NULL DEFAULT 0,      -- 0 pending, 1 delivered, 2 dead
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        settled_at REAL                        -- delivered or dead-lettered at
    )""",
    "CREATE INDEX outbox_pending ON outbox(sink, asset, id) WHERE state = 0",
    "CREATE INDEX outbox_shed ON outbox(class, id) WHERE state <> 1",
    """CREATE TABLE episodes (
        episode_id TEXT PRIMARY KEY,
        rule_id TEXT NOT NULL,
        asset TEXT NOT NULL,
        raised_at REAL NOT NULL,
        severity INTEGER NOT NULL,
        cleared_at REAL                        -- NULL while open
    )""",
    "CREATE INDEX episodes_open ON episodes(rule_id, asset) WHERE cleared_at IS NULL",
    # A rule holds one episode per asset: a new raise supersedes an open one it never cleared.
    # A replayed raise of a known episode changes nothing.
    """CREATE TRIGGER episodes_supersede BEFORE INSERT ON episodes
       WHEN NEW.cleared_at IS NULL
        AND NOT EXISTS (SELECT 1 FROM episodes WHERE episode_id = NEW.episode_id)
       BEGIN
         UPDATE episodes SET cleared_at = NEW.raised_at
          WHERE rule_id = NEW.rule_id AND asset = NEW.asset AND cleared_at IS NULL;
       END""",
    """CREATE TABLE receipts (
        sink TEXT NOT NULL,
        episode_id TEXT NOT NULL,
        receipt TEXT NOT NULL,
        stored_at REAL NOT NULL,
        PRIMARY KEY (sink, episode_id)
    ) WITHOUT ROWID""",
)

_V2 = (
    # retention pruning of delivered rows without a full scan
    "CREATE INDEX outbox_delivered ON outbox(settled_at) WHERE state = 1",
)

_V3 = (
    # When a send of a pending record started, cleared when it is settled. Still set when the
    # record is leased again means the process died mid-send: the upstream outcome is unknown.
    "ALTER TABLE outbox ADD COLUMN sent_at REAL",
)

_V4 = (
    # Lease hands out the head of line of each (sink, episode): it walks a sink's pending records
    # in id order and keeps those with no older pending record in their episode (one seek in
    # the second index). One episode held back (retrying, not yet due) never holds back another
    # episode, also of the same asset; a lease stops after `limit` heads.
    "CREATE INDEX outbox_sink_pending ON outbox(sink, id) WHERE state = 0",
    "CREATE INDEX outbox_episode_heads ON outbox(sink, episode_id, id) WHERE state = 0",
    # The per-asset head index served only the old lease.
    "DROP INDEX outbox_pending",
    # What a rule instance must remember across a restart: msgpack `data`, written in the same
    # transaction as the transitions the samples caused. `fingerprint` is the rule definition.
    """CREATE TABLE rule_state (
        rule_id TEXT NOT NULL,
        asset TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        data BLOB NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (rule_id, asset)
    ) WITHOUT ROWID""",
    # The newest device time evaluated per (source, asset, signal): resends are skipped.
    """CREATE TABLE sample_marks (
        source TEXT NOT NULL,
        asset TEXT NOT NULL,
        signal TEXT NOT NULL,
        device_ts REAL NOT NULL,
        PRIMARY KEY (source, asset, signal)
    ) WITHOUT ROWID""",
    # Things an operator must see until acknowledged (a salvaged corrupt file, for one).
    """CREATE TABLE notices (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        created_at REAL NOT NULL,
        message TEXT NOT NULL,
        detail BLOB NOT NULL,                  -- msgpack map, e.g. the salvage counts
        acknowledged_at REAL
    )""",
)


_V5 = (
    # Delivery attempt history and what each message said, for `plantbridge trace`
    # (see buffer/attempts.py); pruned with the retention of delivered records.
    """CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        record_id INTEGER NOT NULL,         -- outbox.id (the row may be gone: dropped, pruned)
        key TEXT NOT NULL,
        sink TEXT NOT NULL,
        episode_id TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL,
        outcome TEXT NOT NULL,               -- accepted | rejected | retry
        http_status INTEGER,                 -- when the upstream answered with one
        latency_ms REAL,
        error TEXT NOT NULL DEFAULT '',
        receipt TEXT,
        number INTEGER NOT NULL DEFAULT 0    -- the record's attempt number, 1 = first
    )""",
    "CREATE INDEX attempts_episode ON attempts(episode_id, id)",
    "CREATE INDEX attempts_finished ON attempts(finished_at)",
    """CREATE TABLE attempt_facts (
        record_id INTEGER PRIMARY KEY,
        episode_id TEXT NOT NULL,
        stored_at REAL NOT NULL,
        facts TEXT NOT NULL                  -- JSON
    )""",
)

_V6 = (
    # Delivery priority between episodes (gateway.model.Priority, lowest first): critical raises
    # overtake a backlog. Rows of older files get the priority of their kind and class.
    "ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 3",
    """UPDATE outbox SET priority = CASE
         WHEN class = 0 THEN 4
         WHEN class = 1 THEN 3
         WHEN kind = 'maintenance_request' THEN 1
         ELSE 2 END""",
    # Lease walks a sink's pending records by (priority, id) and stops after `limit` heads:
    # the index keeps its name, with the priority between sink and id.
    "DROP INDEX outbox_sink_pending",
    "CREATE INDEX outbox_sink_pending ON outbox(sink, priority, id) WHERE state = 0",
)

_V7 = (
    # What each upstream said of the records we created there, as polled (gateway/status_poll):
    # one row per (sink, episode, state) the first time that state was seen, so the history
    # reads created -> in progress -> completed with times. `raw` is the upstream's own word
    # (Maximo SR status, SAP system status / phase, the REST status field).
    """CREATE TABLE upstream_status (
        sink TEXT NOT NULL,
        episode_id TEXT NOT NULL,
        receipt TEXT NOT NULL,
        state TEXT NOT NULL,                 -- created | in_progress | completed | missing
        raw TEXT NOT NULL DEFAULT '',
        seen_at REAL NOT NULL,
        PRIMARY KEY (sink, episode_id, state)
    ) WITHOUT ROWID""",
)


# Shelves written by `plantbridge shelve` beside the running daemon (buffer/shelves.py).
# A shelf is keyed by what it mutes; shelving the same target again replaces it.
_V8 = (
    """CREATE TABLE shelves (
        kind TEXT NOT NULL,                 -- rule | asset
        target TEXT NOT NULL,               -- the rule id or the asset id
        until REAL NOT NULL,                -- expiry, seconds since the epoch
        reason TEXT NOT NULL,
        shelved_by TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        PRIMARY KEY (kind, target)
    ) WITHOUT ROWID""",
)


# The lease's per-episode index in the time order of episodes. Keyed by the episode id, it put
# a burst's rows all over the index (ids read "rule/asset/raise-ms": one place per asset), and
# every commit wrote each page it touched: a third of the database thread's time at 1,000
# assets flipping. The id's last 13 characters (its raise time in ms, for the engine's ids)
# lead now, so new episodes go to the end; the lease seeks with the same expression, any
# episode id works the same (only where it lands changes). Measured on a burst's commits
# replayed alone (100,000 transitions, 25 commits): 57-59k -> 68-72k transitions/s.
_V9 = (
    "DROP INDEX outbox_episode_heads",
    """CREATE INDEX outbox_episode_heads
       ON outbox(sink, substr(episode_id, -13), episode_id, id) WHERE state = 0""",
)


MIGRATIONS: Sequence[Sequence[str]] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9)
LATEST = len(MIGRATIONS)


# Steps that can be undone, so that a release can be rolled back with its outbox
# (`plantbridge outbox downgrade --to N`): version -> the statements that take a file of that
# version back to the one before. Only steps that change no data (indexes) are here.
REVERSIBLE: Mapping[int, Sequence[str]] = {
    9: ("DROP INDEX outbox_episode_heads",
        "CREATE INDEX outbox_episode_heads ON outbox(sink, episode_id, id) WHERE state = 0"),
}


class CannotDowngrade(ValueError):
    """The file cannot be taken back to the version asked for: nothing was changed."""


async def downgrade(db: aiosqlite.Connection, target: int) -> int:
    """Take the file back from its version to `target`, one step per transaction; returns the
    version it started at. Checks every step first: a step that changed data is refused before
    anything is undone. The connection must be in autocommit mode (isolation_level=None)."""
    start = await user_version(db)
    if target < 1:
        raise CannotDowngrade(f"schema version {target} does not exist (the first is 1)")
    stuck = [v for v in range(start, target, -1) if v not in REVERSIBLE]
    if stuck:
        raise CannotDowngrade(
            f"schema step {max(stuck)} changed the data and cannot be undone: the oldest "
            f"version this file can be taken back to is {max(stuck)}")
    for version in range(start, target, -1):
        await _step(db, REVERSIBLE[version], version - 1)
    return start


async def user_version(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def migrate(db: aiosqlite.Connection, target: int = LATEST) -> int:
    """Bring the file from its version up to `target`; returns the version it started at.

    The connection must be in autocommit mode (isolation_level=None).
    """
    start = await user_version(db)
    for version in range(start + 1, target + 1):
        await _step(db, MIGRATIONS[version - 1], version)
    return start


async def _step(db: aiosqlite.Connection, statements: Sequence[str], version: int) -> None:
    """`statements`, then `version` as the file's, in one transaction."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        for statement in statements:
            await db.execute(statement)
        await db.execute(f"PRAGMA user_version = {version}")
        await db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            await db.execute("ROLLBACK")
        raise
