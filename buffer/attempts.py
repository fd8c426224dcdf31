"""Delivery attempt history and the read-only queries `trace` and `outbox` tools run.

The forwarder writes one `Attempt` per record per send when it settles, plus, once per record,
the `facts` of its message (rule, signal, value, reason, title): a delivered record loses its
body to save space, but `plantbridge trace` must still say what raised the request. Both are
pruned with the retention of delivered records (see `PRUNE_SQL`, run by the store's prune).

Functions here take an open connection; OutboxStore wraps them under its lock. No rule kind or
protocol is known here: facts are an opaque small mapping chosen by the writer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiosqlite
import msgpack
import orjson

from buffer.schema import DEAD, DELIVERED, PENDING

if TYPE_CHECKING:  # frozen to the checker, without the frozen __init__'s cost (gateway/model.py)
    from dataclasses import dataclass as hot_record
else:
    from gateway.model import hot_record

STATE_NAMES = {PENDING: "pending", DELIVERED: "delivered", DEAD: "dead"}
# A record retried for days would fill the disk with history nobody reads: the writer keeps
# its first attempts, then every KEEP_EVERY_ATTEMPT-th, and always the final outcome.
KEEP_FIRST_ATTEMPTS = 20
KEEP_EVERY_ATTEMPT = 10


def worth_keeping(number: int, final: bool) -> bool:
    """Whether attempt `number` (1 = first) of a record goes into the history."""
    return final or number <= KEEP_FIRST_ATTEMPTS or number % KEEP_EVERY_ATTEMPT == 0


@hot_record(frozen=True, slots=True)  # one per settled send: thousands a second in a drain
class Attempt:
    """One send of one record and what came of it. `outcome` is an Outcome value."""

    record_id: int
    key: str
    sink: str
    episode_id: str
    started_at: float
    finished_at: float
    outcome: str
    http_status: int | None = None
    latency_ms: float | None = None
    error: str = ""
    receipt: str | None = None
    number: int = 0  # the record's attempt number, 1 = first (gaps: see KEEP_FIRST_ATTEMPTS)


@hot_record(frozen=True, slots=True)
class MessageFacts:
    """What a message said, kept after its body is gone (JSON-able values only)."""

    record_id: int
    episode_id: str
    stored_at: float
    facts: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """An outbox row as the operator tools show it. `body` only when asked for and kept."""

    id: int
    key: str
    sink: str
    asset: str
    episode_id: str
    kind: str
    state: str  # pending | delivered | dead
    created_at: float
    attempts: int
    next_attempt_at: float
    last_error: str
    settled_at: float | None
    receipt: str | None
    body: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class EpisodeRow:
    episode_id: str
    rule_id: str
    asset: str
    raised_at: float
    severity: int
    cleared_at: float | None


@dataclass(frozen=True, slots=True)
class Trace:
    """Everything the outbox knows of one episode."""

    episode_id: str
    episode: EpisodeRow | None
    records: list[StoredRecord]
    attempts: list[Attempt]
    facts: dict[int, Mapping[str, Any]]


# History of records that are gone (delivered and pruned, or dropped) ages out with the
# retention; a pending or dead record keeps all of its history.
PRUNE_SQL = (
    "DELETE FROM attempts WHERE finished_at < ? AND record_id NOT IN (SELECT id FROM outbox)",
    "DELETE FROM attempt_facts WHERE stored_at < ?"
    " AND record_id NOT IN (SELECT id FROM outbox)",
)

# in the form of a multi-row insert padded with rows of NULLs (buffer/statements.py
# insert_rows); facts are first-one-wins, so copies of a row pad them
_INSERT_ATTEMPT = (
    "INSERT INTO attempts (record_id, key, sink, episode_id, started_at, finished_at, outcome,"
    " http_status, latency_ms, error, receipt, number)"
    " SELECT * FROM (VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)) WHERE column1 IS NOT NULL")
_NO_ATTEMPT = (None,) * 12
_INSERT_FACTS = ("INSERT OR IGNORE INTO attempt_facts (record_id, episode_id, stored_at, facts)"
                 " VALUES (?, ?, ?, ?)")
_RECORD_COLUMNS = (
    "o.id, o.key, o.sink, o.asset, o.episode_id, o.kind, o.state, o.created_at, o.attempts,"
    " o.next_attempt_at, o.last_error, o.settled_at, r.receipt")
_RECORD_FROM = ("FROM outbox o LEFT JOIN receipts r"
                " ON r.sink = o.sink AND r.episode_id = o.episode_id")


# a statement of one VALUES row, its parameter rows, and what pads a multi-row statement of
# it (None: a copy of the last row)
HistoryRows = tuple[str, list[tuple[Any, ...]], tuple[Any, ...] | None]


def history_rows(attempts: Sequence[Attempt], facts: Sequence[MessageFacts]
                 ) -> list[HistoryRows]:
    """(statement, parameter rows, pad) that append `attempts` and (first one wins) `facts`:
    what `write` runs, and what the store's settle runs in its own transaction."""
    return [
        (_INSERT_ATTEMPT, [
            (a.record_id, a.key, a.sink, a.episode_id, a.started_at, a.finished_at, a.outcome,
             a.http_status, a.latency_ms, a.error, a.receipt, a.number) for a in attempts],
         _NO_ATTEMPT),
        (_INSERT_FACTS, [
            (f.record_id, f.episode_id, f.stored_at,
             orjson.dumps(dict(f.facts), default=str).decode()) for f in facts], None),
    ]


async def write(db: aiosqlite.Connection, attempts: Sequence[Attempt],
                facts: Sequence[MessageFacts]) -> None:
    """Insert attempts and (first one wins) facts; the caller owns the transaction."""
    for sql, rows, _ in history_rows(attempts, facts):
        if rows:
            await db.executemany(sql, rows)


def _record(r: Sequence[Any], body: bytes | None = None) -> StoredRecord:
    return StoredRecord(
        id=r[0], key=r[1], sink=r[2], asset=r[3], episode_id=r[4], kind=r[5],
        state=STATE_NAMES.get(r[6], str(r[6])), created_at=r[7], attempts=r[8],
        next_attempt_at=r[9], last_error=r[10], settled_at=r[11], receipt=r[12],
        body=None if body is None else msgpack.unpackb(body))


async def list_records(db: aiosqlite.Connection, *, sink: str | None = None,
                       asset: str | None = None, dead: bool = False, bodies: bool = False,
                       limit: int = 1000) -> list[StoredRecord]:
    """Undelivered records (pending and dead; only dead with `dead`), oldest first."""
    where = ["o.state = ?" if dead else "o.state <> ?"]
    args: list[Any] = [DEAD if dead else DELIVERED]
    for column, value in (("o.sink", sink), ("o.asset", asset)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    body = ", o.body" if bodies else ""
    rows = await db.execute_fetchall(
        f"SELECT {_RECORD_COLUMNS}{body} {_RECORD_FROM} WHERE {' AND '.join(where)}"
        " ORDER BY o.id LIMIT ?", (*args, limit))
    return [_record(r, r[13] if bodies else None) for r in rows]


async def _episode_of(db: aiosqlite.Connection, ident: str) -> str | None:
    """The episode an id names: episode id, idempotency key, external ref (PB...) or receipt."""
    probes: tuple[tuple[str, tuple[Any, ...]], ...] = (
        ("SELECT episode_id FROM episodes WHERE episode_id = ?", (ident,)),
        ("SELECT episode_id FROM outbox WHERE key = ?", (ident,)),
        ("SELECT episode_id FROM outbox WHERE episode_id = ? LIMIT 1", (ident,)),
        ("SELECT episode_id FROM attempts WHERE key = ? LIMIT 1", (ident,)),
        # the external reference PB... sits between the intent and the sink in every key
        ("SELECT episode_id FROM outbox WHERE key LIKE ? ESCAPE '\\' LIMIT 1",
         ("%:" + ident.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ":%",)),
        ("SELECT episode_id FROM receipts WHERE receipt = ? LIMIT 1", (ident,)),
        ("SELECT episode_id FROM attempts WHERE receipt = ? LIMIT 1", (ident,)),
    )
    for sql, args in probes:
        rows = list(await db.execute_fetchall(sql, args))
        if rows:
            return str(rows[0][0])
    return None


async def find_trace(db: aiosqlite.Connection, ident: str) -> Trace | None:
    """One episode's whole life, or None when `ident` names nothing the outbox knows. An
    episode's records include its side lanes, episode ids `<episode_id>#<lane>` (the parts
    steps of gateway/workflow.py): they are delivered apart but belong to its story."""
    episode_id = await _episode_of(db, ident.strip())
    if episode_id is None:
        return None
    if "#" in episode_id and not list(await db.execute_fetchall(
            "SELECT 1 FROM episodes WHERE episode_id = ?", (episode_id,))):
        episode_id = episode_id.partition("#")[0]  # a side lane named: its episode's story
    like = (episode_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            + "#%")
    args = (episode_id, like)

    def lanes(column: str) -> str:
        return f"({column} = ? OR {column} LIKE ? ESCAPE '\\')"

    ep = list(await db.execute_fetchall(
        "SELECT episode_id, rule_id, asset, raised_at, severity, cleared_at FROM episodes"
        " WHERE episode_id = ?", (episode_id,)))
    rows = await db.execute_fetchall(
        f"SELECT {_RECORD_COLUMNS}, o.body {_RECORD_FROM} WHERE {lanes('o.episode_id')}"
        " ORDER BY o.id", args)
    records = [_record(r, r[13]) for r in rows]
    att = await db.execute_fetchall(
        "SELECT record_id, key, sink, episode_id, started_at, finished_at, outcome, http_status,"
        f" latency_ms, error, receipt, number FROM attempts WHERE {lanes('episode_id')}"
        " ORDER BY id", args)
    attempts = [Attempt(*a) for a in att]
    facts = {int(f[0]): orjson.loads(f[1]) for f in await db.execute_fetchall(
        f"SELECT record_id, facts FROM attempt_facts WHERE {lanes('episode_id')}", args)}
    return Trace(episode_id, EpisodeRow(*ep[0]) if ep else None, records, attempts, facts)
