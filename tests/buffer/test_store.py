"""OutboxStore rules, one by one, against a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from buffer.errors import OutboxError, StorageError
from buffer.store import OutboxStore, Synchronous
from gateway.model import (
    Delivery,
    MessageClass,
    MessageKind,
    Outcome,
    TransitionKind,
)
from tests.buffer.conftest import message, pragma, transition

RAISED, CLEARED = TransitionKind.RAISED, TransitionKind.CLEARED


async def test_commit_counts_only_new_keys(store: OutboxStore) -> None:
    assert await store.commit([], [message("a"), message("b"), message("a")]) == 2
    assert await store.commit([], [message("b"), message("c")]) == 1
    stats = await store.stats(1000.0)
    assert stats.pending == {"cmms": 3}


async def test_delivered_key_is_still_ignored(store: OutboxStore) -> None:
    await store.commit([], [message("a")])
    [rec] = await store.lease("cmms", 10, 1000.0)
    await store.settle([Delivery(rec.id, Outcome.ACCEPTED)], 1000.0)
    assert await store.commit([], [message("a")]) == 0
    assert await store.lease("cmms", 10, 1000.0) == []
    assert (await store.stats(1000.0)).delivered == {"cmms": 1}


async def test_lease_reconstructs_the_message_exactly(store: OutboxStore) -> None:
    body = {"title": "Vibration high \u2013 pump \u2713 \u00fc", "value": 7.25, "count": 3,
            "none": None, "flag": True, "big": 2**40,
            "nested": {"list": [1, 2.5, "x", None], "empty": {}}}
    m = message("k", kind=MessageKind.STATUS_UPDATE, message_class=MessageClass.STATUS,
                created_at=1234.5678, body=body)
    await store.commit([], [m])
    [rec] = await store.lease("cmms", 10, 2000.0)
    assert rec.message == m
    assert rec.attempts == 0 and rec.upstream_ref is None


async def test_lease_is_one_head_per_asset_oldest_first(store: OutboxStore) -> None:
    await store.commit([], [message("p1-a", asset="p1"), message("p2-a", asset="p2"),
                            message("p1-b", asset="p1"), message("p3-a", asset="p3"),
                            message("other-sink", asset="p1", sink="erp")])
    got = await store.lease("cmms", 10, 1000.0)
    assert [r.message.key for r in got] == ["p1-a", "p2-a", "p3-a"]
    assert [r.message.key for r in await store.lease("cmms", 2, 1000.0)] == ["p1-a", "p2-a"]
    assert [r.message.key for r in await store.lease("erp", 10, 1000.0)] == ["other-sink"]
    assert await store.lease("nobody", 10, 1000.0) == []
    assert await store.lease("cmms", 0, 1000.0) == []
    await store.settle([Delivery(got[0].id, Outcome.ACCEPTED)], 1000.0)
    assert [r.message.key for r in await store.lease("cmms", 10, 1000.0)] == [
        "p2-a", "p1-b", "p3-a"]


async def test_lease_does_not_change_anything(store: OutboxStore) -> None:
    await store.commit([], [message("a")])
    first = await store.lease("cmms", 10, 1000.0)
    assert await store.lease("cmms", 10, 1000.0) == first


async def test_retry_waits_and_blocks_its_asset_only(store: OutboxStore) -> None:
    await store.commit([], [message("raise", asset="p1"), message("clear", asset="p1"),
                            message("x", asset="p2")])
    raise_rec, x_rec = await store.lease("cmms", 10, 100.0)
    await store.settle([Delivery(raise_rec.id, Outcome.RETRY, reason="503",
                                 retry_after_seconds=30.0),
                        Delivery(x_rec.id, Outcome.RETRY, reason="timeout")], 100.0)
    # neither due; the clear must not overtake its raise
    assert await store.lease("cmms", 10, 100.5) == []
    got = await store.lease("cmms", 10, 101.0)  # default retry delay is 1 s
    assert [r.message.key for r in got] == ["x"] and got[0].attempts == 1
    got = await store.lease("cmms", 10, 130.0)
    assert [r.message.key for r in got] == ["raise", "x"]
    assert got[0].attempts == 1


async def test_retry_after_zero_is_due_at_once(store: OutboxStore) -> None:
    await store.commit([], [message("a")])
    [rec] = await store.lease("cmms", 10, 50.0)
    await store.settle([Delivery(rec.id, Outcome.RETRY, retry_after_seconds=0.0)], 50.0)
    [again] = await store.lease("cmms", 10, 50.0)
    assert again.id == rec.id and again.attempts == 1


async def test_rejected_is_dead_and_does_not_block(store: OutboxStore) -> None:
    await store.commit([], [message("raise", asset="p1"), message("clear", asset="p1"),
                            message("e", sink="erp")])
    [rec] = await store.lease("cmms", 10, 100.0)
    await store.settle([Delivery(rec.id, Outcome.REJECTED, reason="400 bad asset")], 150.0)
    assert [r.message.key for r in await store.lease("cmms", 10, 150.0)] == ["clear"]
    [dl] = await store.dead_letters()
    assert (dl.id, dl.key, dl.sink, dl.asset, dl.kind, dl.reason, dl.failed_at) == (
        rec.id, "raise", "cmms", "p1", MessageKind.MAINTENANCE_REQUEST, "400 bad asset", 150.0)
    assert await store.dead_letters("erp") == []
    assert await store.dead_letters("cmms", limit=0) == []
    stats = await store.stats(150.0)
    assert stats.dead == {"cmms": 1} and stats.pending == {"cmms": 1, "erp": 1}


async def test_requeue_dead_puts_it_back_at_the_head(store: OutboxStore) -> None:
    await store.commit([], [message("raise", asset="p1"), message("clear", asset="p1")])
    [rec] = await store.lease("cmms", 10, 100.0)
    await store.settle([Delivery(rec.id, Outcome.REJECTED, reason="400")], 100.0)
    assert await store.requeue_dead([rec.id, rec.id, 9999]) == 1
    [again] = await store.lease("cmms", 10, 100.0)
    assert again.message.key == "raise" and again.attempts == 0
    assert await store.dead_letters() == []
    assert await store.requeue_dead([rec.id]) == 0  # not dead any more


async def test_drop_dead_deletes_only_dead(store: OutboxStore) -> None:
    await store.commit([], [message("a", asset="p1"), message("b", asset="p2")])
    a, b = await store.lease("cmms", 10, 100.0)
    await store.settle([Delivery(a.id, Outcome.REJECTED, reason="gone")], 100.0)
    assert await store.drop_dead([a.id, b.id]) == 1
    assert await store.dead_letters() == []
    stats = await store.stats(100.0)
    assert stats.pending == {"cmms": 1} and stats.dead == {}
    assert await store.commit([], [message("a")]) == 1  # a dropped key may be enqueued again


async def test_clear_carries_the_receipt_of_its_raise(store: OutboxStore) -> None:
    await store.commit([transition(RAISED, "ep-9")],
                       [message("req", episode_id="ep-9"), message("req-erp", sink="erp",
                                                                   episode_id="ep-9")])
    [rec] = await store.lease("cmms", 10, 100.0)
    await store.settle([Delivery(rec.id, Outcome.ACCEPTED, receipt="SR-1001")], 100.0)
    await store.commit([transition(CLEARED, "ep-9", ts=200.0)],
                       [message("clr", episode_id="ep-9", kind=MessageKind.STATUS_UPDATE)])
    [clr] = await store.lease("cmms", 10, 200.0)
    assert clr.message.key == "clr" and clr.upstream_ref == "SR-1001"
    # the other sink has its own receipts
    [erp] = await store.lease("erp", 10, 200.0)
    assert erp.upstream_ref is None
    # the first receipt wins: a clear that echoes another id does not replace it
    await store.settle([Delivery(clr.id, Outcome.ACCEPTED, receipt="OTHER")], 200.0)
    await store.commit([], [message("note", episode_id="ep-9")])
    [note] = await store.lease("cmms", 10, 200.0)
    assert note.upstream_ref == "SR-1001"


async def test_settle_ignores_unknown_settled_and_duplicate_ids(store: OutboxStore) -> None:
    await store.commit([], [message("a")])
    [rec] = await store.lease("cmms", 10, 100.0)
    await store.settle([Delivery(rec.id, Outcome.ACCEPTED), Delivery(rec.id, Outcome.REJECTED),
                        Delivery(424242, Outcome.ACCEPTED)], 100.0)
    await store.settle([Delivery(rec.id, Outcome.RETRY)], 100.0)
    stats = await store.stats(100.0)
    assert stats.delivered == {"cmms": 1} and stats.dead == {} and stats.pending == {}
    await store.settle([], 100.0)


async def test_episodes_open_close_and_survive_restart(db_path: Path) -> None:
    async with await OutboxStore.open(db_path) as store:
        await store.commit([transition(RAISED, "ep-1", ts=10.0),
                            transition(RAISED, "ep-2", asset="fan-2", ts=11.0, severity=1)],
                           [message("r1")])
        await store.commit([transition(CLEARED, "ep-1", ts=20.0)], [])
    async with await OutboxStore.open(db_path) as store:
        [ep] = await store.open_episodes()
        assert (ep.rule_id, ep.asset, ep.episode_id, ep.raised_at, ep.severity) == (
            "vib-high", "fan-2", "ep-2", 11.0, 1)
        # a replayed raise of a closed episode does not reopen it
        await store.commit([transition(RAISED, "ep-1", ts=10.0)], [])
        assert [e.episode_id for e in await store.open_episodes()] == ["ep-2"]


async def test_raise_and_clear_in_one_commit_and_supersede(store: OutboxStore) -> None:
    await store.commit([transition(RAISED, "a", ts=1.0), transition(CLEARED, "a", ts=2.0),
                        transition(RAISED, "b", ts=3.0)], [])
    assert [e.episode_id for e in await store.open_episodes()] == ["b"]
    # a new raise for the same rule and asset supersedes the open one
    await store.commit([transition(RAISED, "c", ts=4.0)], [])
    assert [e.episode_id for e in await store.open_episodes()] == ["c"]
    # replaying the raise of "b" leaves "c" open
    await store.commit([transition(RAISED, "b", ts=3.0)], [])
    assert [e.episode_id for e in await store.open_episodes()] == ["c"]


async def test_stats_counts_and_oldest_pending_age(store: OutboxStore) -> None:
    empty = await store.stats(500.0)
    assert empty.pending == {} and empty.oldest_pending_age_seconds is None
    assert empty.budget_bytes is None and not empty.full and empty.file_bytes > 0
    await store.commit([], [message("a", created_at=100.0, asset="p1"),
                            message("b", created_at=300.0, asset="p2"),
                            message("c", created_at=50.0, sink="erp")])
    stats = await store.stats(500.0)
    assert stats.oldest_pending_age_seconds == 450.0
    assert stats.pending == {"cmms": 2, "erp": 1} and stats.bytes > 0
    [c] = await store.lease("erp", 1, 500.0)
    await store.settle([Delivery(c.id, Outcome.ACCEPTED)], 500.0)
    assert (await store.stats(500.0)).oldest_pending_age_seconds == 400.0


async def test_delivered_rows_lose_their_body_bytes(store: OutboxStore) -> None:
    await store.commit([], [message("a", body={"blob": "x" * 5000})])
    before = (await store.stats(0.0)).bytes
    [rec] = await store.lease("cmms", 1, 0.0)
    await store.settle([Delivery(rec.id, Outcome.ACCEPTED)], 0.0)
    after = (await store.stats(0.0)).bytes
    assert before - after > 5000 and after > 0


async def test_retention_prunes_delivered_keys(db_path: Path) -> None:
    async with await OutboxStore.open(db_path, retention_seconds=100.0) as store:
        await store.commit([transition(RAISED, "ep-1", ts=0.0)], [message("old")])
        [rec] = await store.lease("cmms", 1, 0.0)
        await store.settle([Delivery(rec.id, Outcome.ACCEPTED, receipt="SR-1")], 0.0)
        await store.commit([transition(CLEARED, "ep-1", ts=1.0)], [message("new", asset="p9")])
        await store.settle([], 50.0)  # within retention: nothing pruned
        assert await store.commit([], [message("old")]) == 0
        [new] = await store.lease("cmms", 1, 1000.0)
        await store.settle([Delivery(new.id, Outcome.ACCEPTED)], 1000.0)  # prunes "old"
        stats = await store.stats(1000.0)
        assert stats.delivered == {"cmms": 1}
        assert await store.commit([], [message("old")]) == 1
        [again] = await store.lease("cmms", 1, 1000.0)
        assert again.upstream_ref is None  # the closed episode's receipt went with it
        tracked = (await store.stats(1000.0)).bytes
    async with await OutboxStore.open(db_path) as store:
        assert (await store.stats(1000.0)).bytes == tracked  # the running total stayed exact


async def test_synchronous_setting_is_applied(db_path: Path) -> None:
    for setting, code in ((Synchronous.FULL, 2), (Synchronous.NORMAL, 1)):
        async with await OutboxStore.open(db_path, synchronous=setting) as store:
            assert await pragma(store, "synchronous") == code
            assert await pragma(store, "journal_mode") == "wal"


async def test_close_twice_use_after_close_and_bad_paths(db_path: Path) -> None:
    store = await OutboxStore.open(db_path)
    await store.close()
    await store.close()
    with pytest.raises(OutboxError, match="is closed"):
        await store.commit([], [message("a")])
    with pytest.raises(OutboxError, match="is closed"):
        await store.lease("cmms", 1, 0.0)
    with pytest.raises(StorageError, match=str(db_path.parent)):
        await OutboxStore.open(db_path.parent)  # a directory
    with pytest.raises(ValueError, match="max_bytes"):
        await OutboxStore.open(db_path, max_bytes=0)


async def test_data_survives_reopen(db_path: Path) -> None:
    async with await OutboxStore.open(db_path, synchronous=Synchronous.NORMAL) as store:
        await store.commit([], [message("a"), message("b", asset="p2")])
        a, _ = await store.lease("cmms", 10, 0.0)
        await store.settle([Delivery(a.id, Outcome.RETRY, retry_after_seconds=5.0)], 0.0)
        used = (await store.stats(0.0)).bytes
    async with await OutboxStore.open(db_path) as store:
        assert store.recovered_from is None
        assert [r.message.key for r in await store.lease("cmms", 10, 0.0)] == ["b"]
        assert [r.message.key for r in await store.lease("cmms", 10, 5.0)] == ["a", "b"]
        assert (await store.stats(0.0)).bytes == used


async def test_a_send_that_never_settled_shows_after_reopening(tmp_path: Path) -> None:
    """mark_sent survives a crash; settle clears it; a fresh record has none."""
    path = tmp_path / "o.sqlite"
    store = await OutboxStore.open(path)
    await store.commit([], [message("a", asset="p1"), message("b", asset="p2")])
    [ra, rb] = await store.lease("cmms", 10, 100.0)
    assert ra.unsettled_send_at is None
    await store.mark_sent([ra.id, rb.id], 100.0)
    await store.settle([Delivery(rb.id, Outcome.RETRY, reason="503", retry_after_seconds=0)],
                       100.5)
    await store.close()  # a crash: ra was sent and never settled
    async with await OutboxStore.open(path) as again:
        got = {r.message.key: r for r in await again.lease("cmms", 10, 200.0)}
        assert got["a"].unsettled_send_at == 100.0
        assert got["b"].unsettled_send_at is None  # settled as RETRY: its outcome is known
