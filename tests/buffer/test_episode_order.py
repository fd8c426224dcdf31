"""Head of line per episode: a clear waits for its raise, other episodes never wait; a record
that keeps failing is counted as stuck and holds back nothing but its own episode."""

from __future__ import annotations

import sqlite3

from buffer.schema import MIGRATIONS
from buffer.statements import LEASE
from buffer.store import OutboxStore
from gateway.model import Delivery, MessageKind, OutboxRecord, Outcome
from tests.buffer.conftest import message


def keys(records: list[OutboxRecord]) -> list[str]:
    return [r.message.key for r in records]


async def test_an_episode_refused_forever_does_not_block_another_of_its_asset(
        store: OutboxStore) -> None:
    await store.commit([], [message("vib-raise", episode_id="ep-vib", created_at=10.0)])
    [vib] = await store.lease("cmms", 10, 10.0)
    # the upstream answers 500 to this create, again and again
    now = 10.0
    for _ in range(5):
        await store.settle([Delivery(vib.id, Outcome.RETRY, reason="500 internal error",
                                     retry_after_seconds=60.0)], now)
        now += 1.0
    # another rule's critical raise and clear on the same asset go out at once, in order
    await store.commit([], [message("temp-raise", episode_id="ep-temp", created_at=now),
                            message("temp-clear", episode_id="ep-temp", created_at=now),
                            message("vib-clear", episode_id="ep-vib", created_at=now)])
    [head] = await store.lease("cmms", 10, now)
    assert head.message.key == "temp-raise"  # vib's raise is not due; its clear waits behind it
    await store.settle([Delivery(head.id, Outcome.ACCEPTED, receipt="SR-7")], now)
    [clear] = await store.lease("cmms", 10, now)
    assert clear.message.key == "temp-clear" and clear.upstream_ref == "SR-7"
    await store.settle([Delivery(clear.id, Outcome.ACCEPTED)], now)
    assert await store.lease("cmms", 10, now) == []
    # once due, the refused raise comes back first in its episode, never its clear
    assert keys(await store.lease("cmms", 10, now + 60.0)) == ["vib-raise"]


async def test_a_clear_never_leaves_before_its_raise_is_settled(store: OutboxStore) -> None:
    await store.commit([], [message("r1", episode_id="e1"), message("c1", episode_id="e1"),
                            message("r2", episode_id="e2"), message("c2", episode_id="e2")])
    first = await store.lease("cmms", 10, 1000.0)
    assert keys(first) == ["r1", "r2"]
    assert keys(await store.lease("cmms", 1, 1000.0)) == ["r1"]  # oldest first under a limit
    await store.settle([Delivery(first[1].id, Outcome.ACCEPTED)], 1000.0)
    assert keys(await store.lease("cmms", 10, 1000.0)) == ["r1", "c2"]
    await store.settle([Delivery(first[0].id, Outcome.REJECTED, reason="400")], 1000.0)
    assert keys(await store.lease("cmms", 10, 1000.0)) == ["c1", "c2"]  # dead never blocks


async def test_lease_walks_pending_indexes_and_never_sorts() -> None:
    db = sqlite3.connect(":memory:")
    for step in MIGRATIONS:
        for sql in step:
            db.execute(sql)
    plan = " | ".join(r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {LEASE}",
                                                 {"sink": "s", "now": 0, "limit": 1}))
    assert "SEARCH o USING INDEX outbox_sink_pending (sink=?)" in plan, plan
    # the index leads with the episode's time (schema V9): the seek uses every column of it
    assert ("USING INDEX outbox_episode_heads (sink=? AND <expr>=? AND episode_id=? AND id<?)"
            in plan), plan
    assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan


async def test_stuck_records_are_counted_per_sink(store: OutboxStore) -> None:
    await store.commit([], [
        message("old-fail", episode_id="e1", created_at=100.0),
        message("young-fail", episode_id="e2", created_at=900.0),
        message("old-untried", episode_id="e3", created_at=50.0),
        message("older-fail", episode_id="e4", created_at=80.0),
        message("erp-ok", sink="erp", episode_id="e5", created_at=200.0)])
    recs = {r.message.key: r for r in await store.lease("cmms", 10, 1000.0)}
    await store.settle([Delivery(recs[k].id, Outcome.RETRY, reason=f"503 for {k}")
                        for k in ("old-fail", "young-fail", "older-fail")], 1000.0)
    await store.settle([Delivery(recs["older-fail"].id, Outcome.RETRY, reason="500 again")],
                       1001.0)
    stats = await store.stats(1000.0)
    assert stats.oldest_pending_age_by_sink == {"cmms": 950.0, "erp": 800.0}
    assert stats.oldest_pending_age_seconds == 950.0
    assert stats.stuck == {"cmms": 2}  # older than 600 s and failed at least once
    oldest = stats.stuck_oldest["cmms"]
    assert oldest == {"id": recs["older-fail"].id, "key": "older-fail", "asset": "pump-1",
                      "episode_id": "e4", "attempts": 2, "last_error": "500 again",
                      "age_seconds": 920.0, "request": True, "count": 2}
    assert stats.stuck_by_class == {"cmms": {"request": oldest}}
    assert (await store.stats(1000.0, stuck_after_seconds=50.0)).stuck == {"cmms": 3}
    assert (await store.stats(1000.0, stuck_after_seconds=5000.0)).stuck == {}
    # delivered, it is no longer stuck
    await store.settle([Delivery(recs["older-fail"].id, Outcome.ACCEPTED)], 1002.0)
    after = await store.stats(1002.0)
    assert after.stuck == {"cmms": 1} and after.stuck_oldest["cmms"]["key"] == "old-fail"


async def test_stuck_records_are_told_apart_by_kind_not_by_key(store: OutboxStore) -> None:
    """A stuck maintenance request is a problem, a stuck status update or parts step a delay:
    the class comes from the record's kind, whatever its key looks like."""
    await store.commit([], [
        message("request:x", episode_id="e1", kind=MessageKind.STATUS_UPDATE, created_at=100.0),
        message("plain-key", episode_id="e2", created_at=200.0),
        message("parts-1", episode_id="e3", kind=MessageKind.PARTS_STOCK, created_at=50.0)])
    recs = {r.message.key: r for r in await store.lease("cmms", 10, 1000.0)}
    await store.settle([Delivery(r.id, Outcome.RETRY, reason="503") for r in recs.values()],
                       1000.0)
    by_class = (await store.stats(1000.0)).stuck_by_class["cmms"]
    assert by_class["request"]["key"] == "plain-key" and by_class["request"]["count"] == 1
    assert by_class["other"]["key"] == "parts-1" and by_class["other"]["count"] == 2
