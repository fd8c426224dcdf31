"""The size budget: shed telemetry, then status, oldest first; never events; refuse the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from buffer.budget import row_bytes
from buffer.errors import BufferFull
from buffer.store import OutboxStore
from gateway.model import Delivery, MessageClass, OutboxMessage, Outcome
from tests.buffer.conftest import message

T, S, E = MessageClass.TELEMETRY, MessageClass.STATUS, MessageClass.EVENT


def sized(key: str, cls: MessageClass, asset: str = "p1") -> OutboxMessage:
    return message(key, message_class=cls, asset=asset, body={"pad": "x" * 900})


def cost(m: OutboxMessage) -> int:
    import msgpack

    return row_bytes(m, msgpack.packb(dict(m.body)))


async def keys(store: OutboxStore) -> list[str]:
    """Every undelivered key, by asking for each asset's head repeatedly (accept as we go)."""
    got = []
    while recs := await store.lease("cmms", 1000, 1e12):
        got += [r.message.key for r in recs]
        await store.settle([Delivery(r.id, Outcome.ACCEPTED) for r in recs], 0.0)
    return got


async def test_sheds_telemetry_then_status_oldest_first(db_path: Path) -> None:
    one = cost(sized("t0", T))
    async with await OutboxStore.open(db_path, max_bytes=one * 4 + 10) as store:
        await store.commit([], [sized("s0", S), sized("t0", T), sized("s1", S), sized("t1", T)])
        assert not (await store.stats(0.0)).full
        await store.commit([], [sized("e0", E)])  # sheds t0 (oldest telemetry)
        stats = await store.stats(0.0)
        assert stats.shed == {"telemetry": 1} and stats.full and stats.bytes <= one * 4 + 10
        await store.commit([], [sized("e1", E), sized("e2", E)])  # sheds t1, then s0
        stats = await store.stats(0.0)
        assert stats.shed == {"telemetry": 2, "status": 1}
        assert await keys(store) == ["s1", "e0", "e1", "e2"]


async def test_events_are_never_shed_and_always_accepted(db_path: Path) -> None:
    one = cost(sized("e0", E))
    async with await OutboxStore.open(db_path, max_bytes=one * 2) as store:
        for i in range(6):
            assert await store.commit([], [sized(f"e{i}", E, asset=f"p{i}")]) == 1
        stats = await store.stats(0.0)
        assert stats.pending == {"cmms": 6} and stats.full and stats.bytes > one * 5
        assert stats.shed == {}


async def test_buffer_full_refuses_and_loses_nothing(db_path: Path) -> None:
    one = cost(sized("e0", E))
    async with await OutboxStore.open(db_path, max_bytes=one * 2 + 10) as store:
        await store.commit([], [sized("e0", E), sized("s0", S)])
        before = await store.stats(0.0)
        # telemetry may not evict status, nor events: refused as a whole
        with pytest.raises(BufferFull, match="no older telemetry or status") as info:
            await store.commit([], [sized("t0", T), sized("t1", T)])
        assert info.value.refused == 2
        after = await store.stats(0.0)
        assert (after.pending, after.bytes, after.shed) == (before.pending, before.bytes, {})
        assert after.refused == 2 and after.full
        # a status message may displace the older status one
        await store.commit([], [sized("s1", S)])
        assert (await store.stats(0.0)).shed == {"status": 1}
        # a mixed commit that does not fit is refused whole: all or nothing
        with pytest.raises(BufferFull):
            await store.commit([], [sized("e9", E), sized("t9", T), sized("t10", T)])
        assert await keys(store) == ["e0", "s1"]


async def test_not_full_again_once_room_returns(db_path: Path) -> None:
    one = cost(sized("t0", T))
    async with await OutboxStore.open(db_path, max_bytes=one * 2 + 10) as store:
        await store.commit([], [sized("t0", T), sized("t1", T)])
        await store.commit([], [sized("t2", T)])
        assert (await store.stats(0.0)).full  # shed t0 to fit
        await keys(store)  # deliver everything: delivered rows keep only their key
        await store.commit([], [sized("t3", T)])
        assert not (await store.stats(0.0)).full


async def test_used_bytes_survive_reopen_and_dead_rows_are_sheddable(db_path: Path) -> None:
    one = cost(sized("t0", T))
    async with await OutboxStore.open(db_path, max_bytes=one * 2 + 10) as store:
        await store.commit([], [sized("t0", T), sized("e0", E, asset="p2")])
        leased = await store.lease("cmms", 10, 0.0)  # the event first: it has priority
        t0 = next(r for r in leased if r.message.key == "t0")
        await store.settle([Delivery(t0.id, Outcome.REJECTED, reason="400")], 0.0)
        used = (await store.stats(0.0)).bytes
    async with await OutboxStore.open(db_path, max_bytes=one * 2 + 10) as store:
        assert (await store.stats(0.0)).bytes == used
        await store.commit([], [sized("e1", E, asset="p3")])
        assert await store.dead_letters() == []
        assert (await store.stats(0.0)).shed == {"telemetry": 1}


async def test_delivered_telemetry_keys_go_before_anything_undelivered(db_path: Path) -> None:
    keys_only = [message(f"d{i}", message_class=T, asset=f"x{i}", body={}) for i in range(40)]
    async with await OutboxStore.open(db_path, max_bytes=20_000) as store:
        await store.commit([], [*keys_only, sized("ev", E, asset="y"),
                                sized("t-pending", T, asset="z")])
        delivered = [r for r in await store.lease("cmms", 100, 0.0) if r.message.asset != "z"]
        await store.settle([Delivery(r.id, Outcome.ACCEPTED) for r in delivered], 0.0)
        room = 20_000 - (await store.stats(0.0)).bytes
        # needs a little more than what is free: the oldest delivered telemetry keys go
        n = await store.commit([], [message("t-new", message_class=T, asset="w",
                                            body={"pad": "n" * (room + 50)})])
        stats = await store.stats(0.0)
        assert n == 1 and stats.shed == {} and 0 < stats.forgotten < 40
        assert await store.commit([], [message("d0", message_class=T)]) == 1  # forgotten
        assert await store.commit([], [message("ev", message_class=E)]) == 0  # event key kept
        assert [r.message.key for r in await store.lease("cmms", 100, 0.0)] == [
            "t-pending", "t-new", "d0"]
