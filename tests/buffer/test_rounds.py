"""A forwarder's round in one transaction: settle (with attempt history), lease and mark sent."""

from __future__ import annotations

from pathlib import Path

from buffer.attempts import Attempt, MessageFacts
from buffer.store import OutboxStore
from gateway.model import Delivery, MessageKind, Outcome
from tests.buffer.conftest import message


async def test_a_round_settles_records_history_and_leases_marked(store: OutboxStore) -> None:
    await store.commit([], [message(k, asset=f"p-{k}") for k in "abcd"])
    first = await store.lease_for_send("cmms", 2, 100.0)
    assert [r.message.key for r in first] == ["a", "b"]
    a, b = first
    got = await store.settle_and_lease(
        [Delivery(a.id, Outcome.ACCEPTED, receipt="MR-1"),
         Delivery(b.id, Outcome.RETRY, reason="HTTP 503", retry_after_seconds=60)],
        101.0, "cmms", 10,
        attempts=[Attempt(a.id, a.message.key, "cmms", a.message.episode_id, 100.0, 101.0,
                          "accepted", 201, 3.0, "", "MR-1", 1)],
        facts=[MessageFacts(a.id, a.message.episode_id, 101.0, {"title": "T"})],
        exclude={a.id, b.id})
    assert [r.message.key for r in got] == ["c", "d"]  # a delivered, b not due for 60 s
    stats = await store.stats(101.0)
    assert stats.delivered == {"cmms": 1} and stats.pending == {"cmms": 3}
    trace = await store.trace("MR-1")
    assert trace is not None and [t.outcome for t in trace.attempts] == ["accepted"]
    assert trace.facts[a.id] == {"title": "T"}
    # c and d were marked sent in the round: a crash now shows their outcome as unknown
    again = {r.message.key: r for r in await store.lease("cmms", 10, 200.0)}
    assert again["c"].unsettled_send_at == 101.0 and again["d"].unsettled_send_at == 101.0
    assert again["b"].unsettled_send_at is None  # settled RETRY: its outcome is known


async def test_since_skips_own_marks_but_not_a_previous_lifes(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    store = await OutboxStore.open(path)
    await store.commit([], [message("a", asset="p1"), message("b", asset="p2")])
    assert len(await store.lease_for_send("cmms", 10, 100.0)) == 2
    await store.close()  # a kill -9: both were under way, neither settled
    async with await OutboxStore.open(path) as box:
        since = 150.0  # the new forwarder starts
        mine = await box.lease_for_send("cmms", 1, 200.0, since=since)
        assert [r.message.key for r in mine] == ["a"]  # the old life's mark is no bar
        # without `exclude`, what this life marked itself is still skipped ...
        assert [r.message.key for r in await box.lease_for_send(
            "cmms", 10, 201.0, since=since)] == ["b"]
        assert await box.lease_for_send("cmms", 10, 202.0, since=since) == []
        # ... and a plain lease (a read, no `since`) still sees both as pending
        assert len(await box.lease("cmms", 10, 203.0)) == 2


async def test_a_clock_that_stood_still_leases_again_and_exclude_guards(
        store: OutboxStore) -> None:
    await store.commit([], [message("a")])
    [a] = await store.lease_for_send("cmms", 10, 100.0, since=100.0)
    # marked at exactly `since`: not skipped in SQL, so only `exclude` keeps it out
    assert [r.id for r in await store.lease_for_send("cmms", 10, 100.0, since=100.0)] == [a.id]
    assert await store.lease_for_send("cmms", 10, 100.0, exclude={a.id}, since=100.0) == []


async def test_a_round_larger_than_one_statement_settles_every_record(
        store: OutboxStore) -> None:
    """A round's accepts, receipts, attempts, facts and marks go in a few multi-row statements
    (buffer/statements.py): a round of 300 spans several statement shapes, each row lands once,
    and of two receipts for one episode the first stays."""
    n = 300
    await store.commit([], [message(f"k{i:03d}", asset=f"p-{i:03d}") for i in range(2 * n)])
    await store.commit([], [message("clear", asset="p-000", kind=MessageKind.STATUS_UPDATE)])
    sent = await store.lease_for_send("cmms", n, 100.0)
    assert len(sent) == n
    deliveries = [Delivery(r.id, Outcome.ACCEPTED, receipt=f"MR-{r.id}") for r in sent]
    attempts = [Attempt(r.id, r.message.key, "cmms", r.message.episode_id, 100.0, 101.0,
                        "accepted", 201, 3.0, "", f"MR-{r.id}", 1) for r in sent]
    facts = [MessageFacts(r.id, r.message.episode_id, 101.0, {"title": r.message.key})
             for r in sent]
    got = await store.settle_and_lease(deliveries, 101.0, "cmms", 2 * n, attempts=attempts,
                                       facts=facts, exclude={r.id for r in sent})
    # the other 300 raises and the clear whose raise is now settled; nothing twice
    assert len(got) == n + 1 and len({r.id for r in got}) == n + 1
    assert not {r.id for r in got} & {r.id for r in sent}
    stats = await store.stats(101.0)
    assert stats.delivered == {"cmms": n} and stats.pending == {"cmms": n + 1}
    for r in (sent[0], sent[127], sent[128], sent[-1]):  # either side of a statement's end
        trace = await store.trace(f"MR-{r.id}")
        assert trace is not None and [a.number for a in trace.attempts] == [1]
        assert trace.facts[r.id] == {"title": r.message.key}
    [clear] = [r for r in got if r.message.key == "clear"]
    assert clear.upstream_ref == f"MR-{sent[0].id}"  # the raise's receipt
    # a second receipt for the same episode does not replace the first
    await store.settle_and_lease([Delivery(clear.id, Outcome.ACCEPTED, receipt="MR-other")],
                                 102.0, "cmms", 0)
    await store.commit([], [message("note", asset="p-000", kind=MessageKind.STATUS_UPDATE)])
    [note] = [r for r in await store.lease("cmms", 3 * n, 103.0) if r.message.key == "note"]
    assert note.upstream_ref == f"MR-{sent[0].id}"
    marked = {r.id: r for r in await store.lease("cmms", 3 * n, 200.0)}
    assert all(marked[r.id].unsettled_send_at == 101.0 for r in got if r.id in marked)
