"""The outbox side of northbound status: `replace_pending_status` coalesces per (asset, sink),
in one transaction, and gives way under the budget (a real SQLite outbox)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import msgpack
import pytest

from buffer.budget import row_bytes
from buffer.errors import BufferFull
from buffer.operator import UpstreamStatusRow
from buffer.store import OutboxStore
from gateway.asset_status import (
    AssetStatusPublisher,
    StatusBothWays,
    status_body,
    status_message,
)
from gateway.messages import messages_for
from gateway.model import (
    Delivery,
    EpisodeState,
    MessageClass,
    OutboxMessage,
    Outcome,
    RequestDetails,
    Transition,
    TransitionKind,
)
from tests.harness import wait_for


def _status(asset: str, at: float, sink: str = "cmms/status", alarm: bool = True
            ) -> OutboxMessage:
    eps = [EpisodeState("vib-high", asset, f"vib-high/{asset}/1", at, 2)] if alarm else []
    return status_message(sink, status_body(asset, "site", eps, at), at)


def _raise(asset: str, at: float) -> Transition:
    return Transition(TransitionKind.RAISED, "vib-high", asset, "vibration",
                      f"vib-high/{asset}/{at}", 2, 8.0, at, "vibration 8 above 7.1",
                      RequestDetails("High vibration"))


async def test_newer_status_replaces_the_pending_one_of_its_asset_only(tmp_path: Path) -> None:
    async with await OutboxStore.open(tmp_path / "o.sqlite") as store:
        assert await store.replace_pending_status(_status("pump-1", 1.0)) == 0
        assert await store.replace_pending_status(_status("pump-2", 1.5)) == 0
        assert await store.replace_pending_status(_status("pump-1", 2.0)) == 1
        latest = _status("pump-1", 3.0, alarm=False)
        assert await store.replace_pending_status(latest) == 1
        assert await store.replace_pending_status(latest) == 0  # same key: kept, not doubled
        pending = await store.records(sink="cmms/status", bodies=True)
        assert sorted((r.asset, r.key) for r in pending) == sorted(
            [("pump-1", latest.key), ("pump-2", _status("pump-2", 1.5).key)])
        (leased,) = [r for r in await store.lease("cmms/status", 10, 10.0)
                     if r.message.asset == "pump-1"]
        assert leased.message.body["state"] == "normal"
        assert leased.message.message_class is MessageClass.STATUS
        # A delivered status is history: a newer one does not touch it.
        await store.settle([Delivery(leased.id, Outcome.ACCEPTED)], 10.0)
        assert await store.replace_pending_status(_status("pump-1", 4.0)) == 0
        with pytest.raises(ValueError, match="STATUS-class"):
            await store.replace_pending_status(messages_for(_raise("p", 1.0), ["c"], "s")[0])


async def test_status_gives_way_to_requests_under_the_budget(tmp_path: Path) -> None:
    req = messages_for(_raise("pump-1", 1.0), ["cmms"], "site")[0]
    req_size = row_bytes(req, msgpack.packb(dict(req.body)))
    st = _status("pump-9", 1.0)
    st_size = row_bytes(st, msgpack.packb(dict(st.body)))
    budget = 2 * req_size + st_size + 10
    async with await OutboxStore.open(tmp_path / "o.sqlite", max_bytes=budget) as store:
        await store.replace_pending_status(st)
        t1, t2 = _raise("pump-1", 1.0), _raise("pump-2", 2.0)
        await store.commit([t1], messages_for(t1, ["cmms"], "site"))
        await store.commit([t2], messages_for(t2, ["cmms"], "site"))
        # Full: a new status sheds the older status (of another asset), never a request...
        await store.replace_pending_status(_status("pump-8", 3.0, sink="other/status"))
        stats = await store.stats(5.0)
        assert stats.pending.get("cmms") == 2 and stats.shed.get("status") == 1
        assert not stats.pending.get("cmms/status") and stats.pending.get("other/status") == 1
        # ...a request over the budget sheds the pending status...
        t3 = _raise("pump-3", 3.0)
        await store.commit([t3], messages_for(t3, ["cmms"], "site"))
        stats = await store.stats(5.0)
        assert stats.pending.get("cmms") == 3 and not stats.pending.get("other/status")
        assert stats.shed.get("status") == 2
        # ...and with only requests left, a status is refused and nothing changes.
        with pytest.raises(BufferFull):
            await store.replace_pending_status(_status("pump-7", 4.0))
        assert (await store.stats(5.0)).pending.get("cmms") == 3


async def test_heartbeat_repeats_the_status_and_still_leaves_one_pending(
        tmp_path: Path) -> None:
    async with await OutboxStore.open(tmp_path / "o.sqlite") as store:
        episodes = [EpisodeState("vib-high", "pump-1", "vib-high/pump-1/1", 1.0, 2)]
        woken: list[bool] = []
        publisher = AssetStatusPublisher(store, ["cmms/status"], "site", lambda: episodes,
                                         lambda: woken.append(True), heartbeat_seconds=0.05)
        task = asyncio.create_task(publisher.run())
        try:
            await wait_for(lambda: publisher.stats.enqueued >= 3, 10, "three heartbeats")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        (pending,) = await store.lease("cmms/status", 10, time.time() + 1)
        assert pending.message.body["heartbeat"] is True
        assert pending.message.body["state"] == "alarm"
        assert pending.message.body["severity"] == 2
        assert publisher.stats.replaced >= 2 and woken


async def test_upstream_status_history_is_kept_for_the_retention(tmp_path: Path) -> None:
    async with await OutboxStore.open(tmp_path / "o.sqlite", retention_seconds=100) as store:
        t = _raise("pump-1", 1.0)
        await store.commit([t], [])  # an open episode: its history stays however old
        old = [UpstreamStatusRow("cmms", t.episode_id, "MR-1", "created", "open", 1.0),
               UpstreamStatusRow("cmms", "gone/ep", "MR-0", "created", "open", 1.0)]
        assert await store.record_upstream_status(old) == 2
        assert await store.record_upstream_status(old) == 0  # first sight kept
        later = UpstreamStatusRow("cmms", t.episode_id, "MR-1", "completed", "closed", 500.0)
        assert await store.record_upstream_status([later]) == 1
        assert [(r.episode_id, r.state) for r in await store.upstream_status()] == [
            (t.episode_id, "created"), (t.episode_id, "completed")]


async def test_a_start_publishes_the_assets_of_recent_episodes(tmp_path: Path) -> None:
    """A kill between a transition's commit and its status would leave the upstream with the
    old state: a start sends the current state of every recently active asset."""
    async with await OutboxStore.open(tmp_path / "o.sqlite") as store:
        now = time.time()
        raised, other = _raise("pump-1", now), _raise("pump-2", now)
        cleared = Transition(TransitionKind.CLEARED, "vib-high", "pump-2", "vibration",
                             other.episode_id, 2, 3.0, now + 1, "back", other.request)
        await store.commit([raised, other], messages_for(raised, ["cmms"], "s")
                           + messages_for(other, ["cmms"], "s"))
        await store.commit([cleared], [])
        still_open = [EpisodeState("vib-high", "pump-1", raised.episode_id, now, 2)]
        publisher = AssetStatusPublisher(store, ["cmms/status"], "s", lambda: still_open,
                                         lambda: None)
        task = asyncio.create_task(StatusBothWays()._publish(publisher))
        try:
            await wait_for(lambda: publisher.stats.enqueued == 2, 10, "two statuses")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        leased = await store.lease("cmms/status", 10, now + 10)
        assert {(r.message.asset, r.message.body["state"]) for r in leased} == {
            ("pump-1", "alarm"), ("pump-2", "normal")}
