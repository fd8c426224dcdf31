"""The real OutboxStore, driven by Hypothesis through random operations, against a plain model.

After every step: what was acknowledged is never handed out again, nothing unacknowledged is
lost, per-asset order holds, dead records never block live ones, and counts and the oldest
pending age match the model exactly (record ids included: they are predictable).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from buffer.store import OutboxStore, Synchronous
from gateway.model import (
    Delivery,
    MessageClass,
    MessageKind,
    OutboxMessage,
    OutboxRecord,
    Outcome,
)

T = TypeVar("T")
SINKS = ("cmms", "erp")
ASSETS = ("p1", "p2", "p3")
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
STEPS_RUN = [0]


@dataclass
class Row:
    message: OutboxMessage
    state: str = PENDING
    attempts: int = 0
    next_at: float = 0.0
    reason: str = ""
    failed_at: float | None = None


new_message = st.tuples(st.sampled_from(SINKS), st.sampled_from(ASSETS),
                        st.sampled_from(list(MessageClass)), st.floats(0, 5))
outcomes = st.sampled_from([Outcome.ACCEPTED, Outcome.REJECTED, Outcome.RETRY])
retry_after = st.sampled_from([None, 0.0, 0.5, 3.0])


class OutboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-sm-"))
        self.path = self.dir / "outbox.sqlite"
        self.loop = asyncio.new_event_loop()
        self.store: OutboxStore = self.run(
            OutboxStore.open(self.path, synchronous=Synchronous.NORMAL))
        self.now = 1000.0
        self.next_id = 1
        self.rows: dict[int, Row] = {}
        self.key_ids: dict[str, int] = {}
        self.serial = 0
        self.in_hand: list[OutboxRecord] = []  # leased, maybe not settled yet
        self.acked: set[int] = set()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.store.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- the model ------------------------------------------------------------------------

    def expected_lease(self, sink: str, limit: int, now: float) -> list[int]:
        heads: dict[str, int] = {}
        for rid in sorted(self.rows):
            row = self.rows[rid]
            if row.state == PENDING and row.message.sink == sink:
                heads.setdefault(row.message.asset, rid)
        return sorted(rid for rid in heads.values() if self.rows[rid].next_at <= now)[:limit]

    def count(self, state: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows.values():
            if row.state == state:
                out[row.message.sink] = out.get(row.message.sink, 0) + 1
        return out

    # --- rules ----------------------------------------------------------------------------

    @rule(fresh=st.lists(new_message, min_size=0, max_size=6),
          dups=st.lists(st.integers(0, 10**6), max_size=3), repeat_in_batch=st.booleans())
    def append(self, fresh: list[tuple[str, str, MessageClass, float]], dups: list[int],
               repeat_in_batch: bool) -> None:
        batch: list[OutboxMessage] = []
        for sink, asset, cls, age in fresh:
            self.serial += 1
            key = f"k{self.serial}"
            batch.append(OutboxMessage(
                key=key, sink=sink, asset=asset, episode_id=f"ep-{asset}", kind=(
                    MessageKind.MAINTENANCE_REQUEST if cls is MessageClass.EVENT
                    else MessageKind.STATUS_UPDATE),
                body={"key": key, "age": age, "tags": [sink, asset]},
                created_at=self.now - age, message_class=cls))
        known = sorted(self.key_ids)
        for pick in dups if known else []:
            old = self.rows[self.key_ids[known[pick % len(known)]]].message
            batch.append(OutboxMessage(old.key, old.sink, old.asset, old.episode_id, old.kind,
                                       {"changed": True}, self.now, old.message_class))
        if repeat_in_batch and batch:
            batch.append(batch[0])
        expected_new = 0
        for m in batch:
            if m.key not in self.key_ids:
                self.key_ids[m.key] = self.next_id
                self.rows[self.next_id] = Row(m)
                self.next_id += 1
                expected_new += 1
        assert self.run(self.store.commit([], batch)) == expected_new

    @rule(sink=st.sampled_from(SINKS), limit=st.integers(1, 4))
    def lease(self, sink: str, limit: int) -> None:
        got = self.run(self.store.lease(sink, limit, self.now))
        assert [r.id for r in got] == self.expected_lease(sink, limit, self.now)
        for rec in got:
            row = self.rows[rec.id]
            assert rec.message == row.message and rec.attempts == row.attempts
            assert rec.id not in self.acked, "an acknowledged record was handed out again"
        self.in_hand = got + [r for r in self.in_hand if r.id not in {g.id for g in got}]

    @precondition(lambda self: bool(self.in_hand))
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        chosen = data.draw(st.lists(st.sampled_from(self.in_hand), min_size=1, unique_by=id))
        deliveries = []
        for rec in chosen:
            outcome = data.draw(outcomes)
            wait = data.draw(retry_after)
            deliveries.append(Delivery(rec.id, outcome, reason=f"r{rec.id}",
                                       retry_after_seconds=wait))
            row = self.rows.get(rec.id)
            if row is None or row.state != PENDING:
                continue  # stale: the store must ignore it
            if outcome is Outcome.ACCEPTED:
                row.state = DELIVERED
                self.acked.add(rec.id)
            elif outcome is Outcome.REJECTED:
                row.state, row.reason, row.failed_at = DEAD, f"r{rec.id}", self.now
                row.attempts += 1
                self.acked.add(rec.id)
            else:
                row.attempts += 1
                row.next_at = self.now + (1.0 if wait is None else wait)
                row.reason = f"r{rec.id}"
        self.run(self.store.settle(deliveries, self.now))
        # records settled for good leave our hands; retried ones may be settled again (stale)
        self.in_hand = [r for r in self.in_hand if r.id not in self.acked or
                        data.draw(st.booleans(), label="keep a stale copy")]

    @rule(seconds=st.sampled_from([0.25, 1.0, 2.0, 5.0]))
    def advance_time(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def reopen_after_crash(self) -> None:
        """Close without settling what is in hand, then reopen: nothing may change."""
        self.run(self.store.close())
        self.store = self.run(OutboxStore.open(self.path, synchronous=Synchronous.NORMAL))
        assert self.store.recovered_from is None

    @rule(data=st.data())
    def requeue_dead(self, data: st.DataObject) -> None:
        ids = self.pick_ids(data)
        dead = [i for i in dict.fromkeys(ids) if i in self.rows and self.rows[i].state == DEAD]
        for i in dead:
            row = self.rows[i]
            row.state, row.attempts, row.next_at, row.failed_at = PENDING, 0, 0.0, None
            self.acked.discard(i)
        assert self.run(self.store.requeue_dead(ids)) == len(dead)

    @rule(data=st.data())
    def drop_dead(self, data: st.DataObject) -> None:
        ids = self.pick_ids(data)
        dead = [i for i in dict.fromkeys(ids) if i in self.rows and self.rows[i].state == DEAD]
        for i in dead:
            del self.key_ids[self.rows.pop(i).message.key]
        assert self.run(self.store.drop_dead(ids)) == len(dead)

    def pick_ids(self, data: st.DataObject) -> list[int]:
        candidates = [*sorted(self.rows), self.next_id + 5]
        return data.draw(st.lists(st.sampled_from(candidates), max_size=4))

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def matches_model(self) -> None:
        STEPS_RUN[0] += 1
        stats = self.run(self.store.stats(self.now))
        assert stats.pending == self.count(PENDING)
        assert stats.dead == self.count(DEAD)
        assert stats.delivered == self.count(DELIVERED)
        pending = [r.message.created_at for r in self.rows.values() if r.state == PENDING]
        assert stats.oldest_pending_age_seconds == (
            max(0.0, self.now - min(pending)) if pending else None)
        for sink in SINKS:
            # lease is a read: peeking at the heads now and far ahead changes nothing
            for at in (self.now, self.now + 10**6):
                got = self.run(self.store.lease(sink, 100, at))
                assert [r.id for r in got] == self.expected_lease(sink, 100, at)
                assert not {r.id for r in got} & self.acked
        dead = self.run(self.store.dead_letters(limit=10**6))
        assert [(d.id, d.key, d.reason, d.failed_at, d.attempts) for d in dead] == [
            (i, r.message.key, r.reason, r.failed_at, r.attempts)
            for i, r in sorted(self.rows.items()) if r.state == DEAD]


OutboxMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_outbox_against_model() -> None:
    STEPS_RUN[0] = 0
    OutboxMachine.TestCase().runTest()
    print(f"outbox state machine: {STEPS_RUN[0]} steps checked against the model")
    assert STEPS_RUN[0] > 500
