"""Durable rule state and sample marks: written in the commit's transaction, all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from buffer.errors import BufferFull
from buffer.store import OutboxStore
from gateway.model import MessageClass, RuleState, SampleMark, TransitionKind
from tests.buffer.conftest import message, transition

PENDING_ON = {"pending_since": 1000.5, "window": [1, 0, 1], "muted": False}


def state(rule: str, asset: str, data: object, fingerprint: str = "fp-1") -> RuleState:
    return RuleState(rule_id=rule, asset=asset, fingerprint=fingerprint, data=data)


async def test_states_and_marks_survive_reopen_exactly(db_path: Path) -> None:
    async with await OutboxStore.open(db_path) as store:
        assert await store.load_rule_states() == [] and await store.load_marks() == []
        n = await store.commit(
            [transition(TransitionKind.RAISED, "ep-1")], [message("req", episode_id="ep-1")],
            states=[state("vib", "pump-1", PENDING_ON), state("temp", "pump-2", {1: b"\x00"})],
            marks=[SampleMark("plc-3", "pump-1", "vibration", 1700000000.25)])
        assert n == 1
    async with await OutboxStore.open(db_path) as store:
        assert await store.load_rule_states() == [
            state("temp", "pump-2", {1: b"\x00"}), state("vib", "pump-1", PENDING_ON)]
        assert await store.load_marks() == [
            SampleMark("plc-3", "pump-1", "vibration", 1700000000.25)]
        assert [e.episode_id for e in await store.open_episodes()] == ["ep-1"]


async def test_upsert_delete_and_last_entry_wins(store: OutboxStore) -> None:
    await store.commit([], [], states=[state("vib", "p1", {"n": 1}), state("vib", "p2", 2)],
                       marks=[SampleMark("s", "p1", "v", 5.0)])
    # a later commit: p1 changes (twice in one group: the last wins), p2 is forgotten
    await store.commit([], [], states=[state("vib", "p1", {"n": 2}, "fp-2"),
                                       state("vib", "p1", {"n": 3}, "fp-2"),
                                       state("vib", "p2", None),
                                       state("vib", "never-stored", None)],
                       marks=[SampleMark("s", "p1", "v", 6.0), SampleMark("s", "p1", "v", 7.0),
                              SampleMark("s", "p2", "v", 1.0)])
    assert await store.load_rule_states() == [state("vib", "p1", {"n": 3}, "fp-2")]
    assert await store.load_marks() == [SampleMark("s", "p1", "v", 7.0),
                                        SampleMark("s", "p2", "v", 1.0)]


async def test_buffer_full_writes_no_state_either(db_path: Path) -> None:
    body = {"pad": "x" * 900}
    async with await OutboxStore.open(db_path, max_bytes=1500) as store:
        await store.commit([], [message("t0", message_class=MessageClass.EVENT, body=body)],
                           states=[state("vib", "p1", "before")])
        with pytest.raises(BufferFull):
            await store.commit(
                [transition(TransitionKind.RAISED, "ep-2", asset="p2")],
                [message("t1", message_class=MessageClass.TELEMETRY, body=body)],
                states=[state("vib", "p1", "after"), state("vib", "p3", "new")],
                marks=[SampleMark("s", "p1", "v", 9.0)])
        assert await store.load_rule_states() == [state("vib", "p1", "before")]
        assert await store.load_marks() == []
        assert await store.open_episodes() == []


async def test_a_state_msgpack_cannot_encode_is_refused_before_writing(store: OutboxStore) -> None:
    with pytest.raises(ValueError, match="rule 'vib' for asset 'p1' cannot be stored"):
        await store.commit([transition(TransitionKind.RAISED)], [message("a")],
                           states=[state("ok", "p0", 1), state("vib", "p1", object())])
    assert await store.load_rule_states() == []
    assert await store.open_episodes() == []
    assert await store.commit([], [message("a")]) == 1  # the store (and its packer) still work
    await store.commit([], [], states=[state("ok", "p0", [1, 2])])
    assert await store.load_rule_states() == [state("ok", "p0", [1, 2])]


async def test_an_empty_commit_writes_nothing(store: OutboxStore) -> None:
    before = store._db.total_changes
    assert await store.commit([], [], states=[], marks=[]) == 0
    assert store._db.total_changes == before
    await store.commit([], [], marks=[SampleMark("s", "p1", "v", 1.0)])
    assert store._db.total_changes == before + 1
