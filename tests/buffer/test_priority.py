"""Lease by priority, then age: critical raises overtake a backlog, order within an episode holds,
and the lease stays cheap (an index walk, no sort) under a large backlog."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from itertools import product

from buffer.schema import MIGRATIONS
from buffer.statements import LEASE, priority_of
from buffer.store import OutboxStore
from gateway.messages import messages_for
from gateway.model import (
    Delivery,
    MessageClass,
    MessageKind,
    OutboxRecord,
    Outcome,
    Priority,
    TransitionKind,
)
from tests.buffer.conftest import message, transition


def keys(records: list[OutboxRecord]) -> list[str]:
    return [r.message.key for r in records]


async def test_lease_orders_by_priority_then_age(store: OutboxStore) -> None:
    await store.commit([], [
        message("telemetry", asset="a1", message_class=MessageClass.TELEMETRY),
        message("status", asset="a2", message_class=MessageClass.STATUS),
        message("clear", asset="a3", kind=MessageKind.STATUS_UPDATE),
        message("raise-old", asset="a4"),
        message("raise-new", asset="a5"),
        replace(message("critical", asset="a6"), priority=Priority.CRITICAL_RAISE),
    ])
    assert keys(await store.lease("cmms", 10, 2000.0)) == [
        "critical", "raise-old", "raise-new", "clear", "status", "telemetry"]
    assert keys(await store.lease("cmms", 2, 2000.0)) == ["critical", "raise-old"]


async def test_every_kind_class_and_priority_comes_back_as_committed(
        store: OutboxStore) -> None:
    # the lease maps a row's columns back to the enums by table, not by the enums' own calls:
    # every combination must come back as it went in, a priority its kind and class imply as
    # None (how it is usually given)
    combos = list(product(MessageKind, MessageClass, [None, *Priority]))
    sent = [replace(message(f"m-{i}", asset=f"a-{i}", kind=kind, message_class=cls,
                            body={"i": i, "nested": {"x": [1.5, None, "y"]}}), priority=p)
            for i, (kind, cls, p) in enumerate(combos)]
    await store.commit([], sent)
    got = {r.message.key: r.message for r in await store.lease("cmms", len(sent), 2000.0)}
    for m in sent:
        implied = priority_of(replace(m, priority=None))
        assert got[m.key] == (replace(m, priority=None) if m.priority == implied else m)


async def test_a_critical_raise_committed_last_is_leased_first(store: OutboxStore) -> None:
    t = [transition(TransitionKind.RAISED, f"ep-{i}", asset=f"pump-{i}", severity=3)
         for i in range(50)]
    await store.commit(t, [m for tr in t for m in messages_for(tr, ["cmms"], "site")])
    crit = transition(TransitionKind.RAISED, "ep-crit", asset="press-1", severity=1)
    [msg] = messages_for(crit, ["cmms"], "site")
    assert msg.priority is Priority.CRITICAL_RAISE
    await store.commit([crit], [msg])
    first = await store.lease("cmms", 1, 2000.0)
    assert [r.message.episode_id for r in first] == ["ep-crit"]
    assert first[0].message == msg  # the priority survives the round trip


async def test_the_clear_of_a_critical_episode_still_waits_for_its_raise(
        store: OutboxStore) -> None:
    raise_ = transition(TransitionKind.RAISED, "ep-1", severity=1)
    clear = transition(TransitionKind.CLEARED, "ep-1", severity=1, ts=1001.0)
    await store.commit([raise_], messages_for(raise_, ["cmms"], "s"))
    await store.commit([clear], messages_for(clear, ["cmms"], "s"))
    [head] = await store.lease("cmms", 10, 2000.0)
    assert head.message.kind is MessageKind.MAINTENANCE_REQUEST
    await store.settle([Delivery(head.id, Outcome.RETRY, retry_after_seconds=60.0)], 2000.0)
    assert await store.lease("cmms", 10, 2001.0) == []  # the raise is not due: nor its clear
    [again] = await store.lease("cmms", 10, 2100.0)
    assert again.id == head.id


def test_lease_plan_walks_the_priority_index_without_sorting() -> None:
    db = sqlite3.connect(":memory:")
    for step in MIGRATIONS:
        for sql in step:
            db.execute(sql)
    plan = " | ".join(r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {LEASE}",
                                                 {"sink": "s", "now": 0, "limit": 1}))
    assert "outbox_sink_pending" in plan, plan
    assert "TEMP B-TREE" not in plan and "SCAN" not in plan, plan
    index_sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'outbox_sink_pending'")
    assert "sink, priority, id" in index_sql.fetchone()[0]


async def test_lease_under_a_large_backlog_reads_only_the_heads(store: OutboxStore) -> None:
    """20,000 pending raises; a lease of 64 must not touch them all: measured as the SQLite
    virtual-machine steps of the query, which do not depend on the machine's load."""
    batch = [message(f"r{i}", asset=f"a{i}") for i in range(20_000)]
    for i in range(0, len(batch), 5000):
        await store.commit([], batch[i:i + 5000])
    await store.commit([], [replace(message("crit", asset="z"),
                                    priority=Priority.CRITICAL_RAISE)])
    steps = 0

    def count(*_: object) -> int:
        nonlocal steps
        steps += 1
        return 0

    db = sqlite3.connect(store.path)
    try:
        db.set_progress_handler(count, 100)
        t0 = time.perf_counter()
        rows = db.execute(LEASE, {"sink": "cmms", "now": 2000.0, "limit": 64}).fetchall()
        took = time.perf_counter() - t0
    finally:
        db.close()
    assert len(rows) == 64 and rows[0][1] == "crit"
    assert steps < 100, f"{steps * 100} VM steps for a lease of 64 ({took * 1000:.1f} ms)"
