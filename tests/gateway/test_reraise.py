"""A request raised again has an episode of its own in the real outbox: it neither supersedes
its parent nor comes back into the rules at start, and it closes, with its clear, when its
parent closes (also when the process that saw the parent clear died before saying so)."""

from __future__ import annotations

import time
from pathlib import Path

from buffer.operator import TrackedRecord
from buffer.store import OutboxStore
from gateway.messages import dedup_key
from gateway.model import RequestDetails, Transition, TransitionKind
from gateway.reconcile import request_rebuilder
from gateway.reraise import OpenReraise, ReraiseClears
from gateway.status_poll import enqueue_reraise, reraise_episode_id
from rules import RuleSet

PARENT = "vib-high/pump-1/1764892800000"


def _transition(kind: TransitionKind, ts: float) -> Transition:
    return Transition(kind, "vib-high", "pump-1", "vibration", PARENT, 2, 8.0, ts,
                      "vibration 8 above 7.1", RequestDetails("High vibration", 2))


async def _reraised(store: OutboxStore, now: float) -> str:
    """The parent raised and delivered to cmms, then raised again (as the poller would)."""
    await store.commit([_transition(TransitionKind.RAISED, now - 100)], [])
    rec = TrackedRecord("cmms", PARENT, "vib-high", "pump-1", "MR-1", now - 100, None)
    rebuild = request_rebuilder(RuleSet([]), "site")
    assert await enqueue_reraise(store, rebuild, rec, 2, now)
    assert not await enqueue_reraise(store, rebuild, rec, 2, now + 5)  # the next poll
    return reraise_episode_id(PARENT)


async def test_reraise_row_keeps_its_parent_open_and_stays_out_of_the_rules(
        tmp_path: Path) -> None:
    store = await OutboxStore.open(tmp_path / "outbox.sqlite")
    try:
        child = await _reraised(store, time.time())
        assert [e.episode_id for e in await store.open_episodes()] == [PARENT]
        (open_one,) = await store.open_reraises()
        assert (open_one.episode_id, open_one.sinks) == (child, ("cmms",))
        assert open_one.parent_known and open_one.parent_cleared_at is None
    finally:
        await store.close()


async def test_sweep_closes_a_reraise_whose_parent_closed_with_one_clear(
        tmp_path: Path) -> None:
    store = await OutboxStore.open(tmp_path / "outbox.sqlite")
    woken: list[int] = []
    try:
        now = time.time()
        child = await _reraised(store, now)
        clears = ReraiseClears(store, "site", lambda: woken.append(1))
        assert await clears.sweep() == 0  # parent open: learnt, nothing sent
        # The parent clears through the pipeline's hook: its clear to no sink of the re-raise,
        # the re-raise's clear to cmms, in the same commit ...
        clear = _transition(TransitionKind.CLEARED, now + 50)
        shaped = clears.hook([clear], now + 50, ["cmms", "sap"])
        assert shaped.transitions == []
        assert {m.key for m in shaped.messages} == {
            f"cleared:{dedup_key(PARENT)}:sap", f"cleared:{dedup_key(child)}:cmms"}
        await store.commit([clear], shaped.messages)
        # ... and the process dies before its sweep: the next one closes the re-raise.
        again = ReraiseClears(store, "site", lambda: woken.append(1))
        assert await again.sweep() == 1
        assert await again.sweep() == 0
        assert await store.open_reraises() == []
        pending = await store.records(sink="cmms")
        assert [(r.episode_id, r.kind) for r in pending] == [
            (child, "maintenance_request"), (child, "status_update")]  # no second clear
        trace = await store.trace(child)
        assert trace is not None and trace.episode is not None
        assert trace.episode.cleared_at == clear.ts
        assert woken
    finally:
        await store.close()


def test_hook_leaves_other_clears_alone(tmp_path: Path) -> None:
    clears = ReraiseClears(None, "site", lambda: None)  # type: ignore[arg-type]
    clears.opened("other", OpenReraise("other~re00000000", "r", "a", 2, frozenset({"cmms"})))
    clear = _transition(TransitionKind.CLEARED, time.time())
    assert list(clears.hook([clear], clear.ts, ["cmms"]).transitions) == [clear]
