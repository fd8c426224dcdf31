"""Reading back what we created, over real sockets: SAP PM and Maximo adapters against their
simulators (a planner moves the record on), and the poller's closed-upstream policy against
the CMMS simulator with a real outbox."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from buffer.store import OutboxStore
from gateway.messages import dedup_key, messages_for
from gateway.model import Outcome, SampleBatch
from gateway.reconcile import request_rebuilder
from gateway.status_poll import (
    ClosedPolicy,
    RulePolicy,
    StatusPoller,
    WorkState,
    enqueue_comment,
    enqueue_reraise,
    policy_of,
    reraise_episode_id,
    work_state,
)
from gateway.upstream.maximo import MaximoSinkConfig
from gateway.upstream.rest import RestSink, RestSinkConfig
from rules import RuleSet
from simulators.cmms import CmmsSimulator
from simulators.maximo import MaximoSimulator
from simulators.sap_pm import SapPmSimulator
from tests.upstream.maximo.conftest import ASSETS
from tests.upstream.maximo.conftest import raise_record as maximo_raise
from tests.upstream.sap_pm.conftest import EQUIPMENT, record, sink_config
from tests.upstream.sap_pm.conftest import transition as sap_transition


def test_status_words_map_onto_our_states() -> None:
    assert work_state("Resolved", ["in_progress"], ["resolved"]) is WorkState.COMPLETED
    assert work_state("in_progress", ["in_progress"], ["resolved"]) is WorkState.IN_PROGRESS
    assert work_state("whatever", ["in_progress"], ["resolved"]) is WorkState.CREATED
    assert policy_of(None) == RulePolicy()
    assert reraise_episode_id("r/a/1") == reraise_episode_id("r/a/1") != "r/a/1"


async def test_sap_notification_read_back_follows_the_planner() -> None:
    sim = SapPmSimulator(equipment=EQUIPMENT)
    await sim.start()
    sink = sink_config(sim.url).build()
    try:
        rec = record()
        (got,) = await sink.send([rec])
        assert got.outcome is Outcome.ACCEPTED and got.receipt
        number = got.receipt
        seen = await sink.read_record(number)
        assert seen is not None and seen.state is WorkState.CREATED
        sim.move(number, "in_progress")
        seen = await sink.read_record(number)
        assert seen is not None and seen.state is WorkState.IN_PROGRESS and "NOPR" in seen.raw
        sim.move(number, "completed")
        seen = await sink.read_record(number)
        assert seen is not None and seen.state is WorkState.COMPLETED
        ref = rec.message.body["dedup_key"]
        assert [r.id for r in await sink.records_by_reference(ref)] == [number]
        sim.delete(number)
        assert await sink.read_record(number) is None
        assert await sink.records_by_reference(ref) == []
    finally:
        await sink.aclose()
        await sim.stop()
    assert sap_transition().episode_id == "ep-1"


async def test_maximo_sr_read_back_follows_the_planner() -> None:
    sim = MaximoSimulator(assets=ASSETS, priority_domain=(1, 2, 3, 4, 5))
    await sim.start()
    raw: dict[str, Any] = {
        "type": "maximo", "name": "maximo", "base_url": sim.url,
        "auth": {"kind": "api_key", "key": {"value": "test-key"}},
        "siteid": "BEDFORD", "reportedby": "PLANTBRIDGE",
        "asset_map": {"pump-1": {"assetnum": "PUMP-1"}},
        "total_timeout_seconds": 3.0, "connect_timeout_seconds": 1.0}
    sink = MaximoSinkConfig.model_validate(raw).build()
    try:
        rec = maximo_raise()
        (got,) = await sink.send([rec])
        assert got.outcome is Outcome.ACCEPTED and got.receipt
        ticket = got.receipt
        states = []
        for status in (None, "INPROG", "RESOLVED"):
            if status:
                sim.set_status(ticket, status)
            seen = await sink.read_record(ticket)
            assert seen is not None
            states.append((seen.state, seen.raw))
        assert states == [(WorkState.CREATED, "NEW"), (WorkState.IN_PROGRESS, "INPROG"),
                          (WorkState.COMPLETED, "RESOLVED")]
        found = await sink.records_by_reference(rec.message.body["dedup_key"])
        assert [r.id for r in found] == [ticket]
        sim.delete(ticket)
        assert await sink.read_record(ticket) is None
    finally:
        await sink.aclose()
        await sim.stop()


@pytest.fixture
async def cmms() -> AsyncIterator[CmmsSimulator]:
    sim = CmmsSimulator(api_key="k")
    await sim.start()
    yield sim
    await sim.stop()


async def _delivered(store: OutboxStore, sink: RestSink) -> str:
    """One raised episode of pump-1, its request delivered through `sink`; its receipt."""
    t = sap_transition(asset="pump-1", episode="vib-high/pump-1/1", ts=time.time())
    await store.commit([t], messages_for(t, [sink.name], "site"))
    leased = await store.lease(sink.name, 10, time.time())
    got = await sink.send(leased)
    await store.settle(got, time.time())
    assert got[0].receipt is not None
    return got[0].receipt


async def test_completed_upstream_while_active_raises_one_new_request(
        cmms: CmmsSimulator, tmp_path: Path) -> None:
    cfg = RestSinkConfig.model_validate({
        "type": "rest", "name": "cmms", "base_url": cmms.url,
        "auth": {"kind": "bearer", "token": {"value": "k"}}})
    sink = cfg.build()
    store = await OutboxStore.open(tmp_path / "outbox.sqlite")
    fed: list[SampleBatch] = []
    rebuild = request_rebuilder(RuleSet([]), "site")

    async def reraise(rec: Any, now: float) -> None:
        await enqueue_reraise(store, rebuild, rec, 2, now)

    def poller() -> StatusPoller:
        return StatusPoller(sink, store, 60, reraise=reraise,
                            policy_for=lambda _: RulePolicy(ClosedPolicy.NEW_REQUEST, 0.0),
                            submit=lambda batch, source: fed.append(batch))
    try:
        receipt = await _delivered(store, sink)
        first = poller()
        await first.poll_once()
        cmms.set_status(receipt, "closed")
        await first.poll_once()
        await first.poll_once()
        await poller().poll_once()  # a restart: the same new episode, not a second one
        new_episode = reraise_episode_id("vib-high/pump-1/1")
        pending = await store.records(sink="cmms")
        assert [r.episode_id for r in pending] == [new_episode]
        assert pending[0].key == f"request:{dedup_key(new_episode)}:cmms"
        history = [r.state for r in await store.upstream_status()]
        assert history == ["created", "completed"]
        # open_work: 1 while open, 0 once completed, and again 0 from the restarted poller
        # (a fresh start tells the rules the current value once)
        assert [[s.value for s in b.samples] for b in fed] == [[1.0], [0.0], [0.0]]
        assert {s.signal for b in fed for s in b.samples} == {"open_work"}
    finally:
        await sink.aclose()
        await store.close()


async def test_reraise_waits_for_its_cooldown_and_comment_is_said_once(
        cmms: CmmsSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = RestSinkConfig.model_validate({
        "type": "rest", "name": "cmms", "base_url": cmms.url,
        "auth": {"kind": "bearer", "token": {"value": "k"}}})
    sink = cfg.build()
    store = await OutboxStore.open(tmp_path / "outbox.sqlite")
    rebuild = request_rebuilder(RuleSet([]), "site")
    now = [time.time()]

    async def reraise(rec: Any, at: float) -> None:
        await enqueue_reraise(store, rebuild, rec, 2, at)

    def poller(policy: RulePolicy) -> StatusPoller:
        return StatusPoller(sink, store, 60, reraise=reraise, policy_for=lambda _: policy,
                            clock=lambda: now[0])
    try:
        receipt = await _delivered(store, sink)
        cmms.set_status(receipt, "closed")
        commenting = poller(RulePolicy(ClosedPolicy.COMMENT))
        for _ in range(3):
            await commenting.poll_once()
        said = [r for r in caplog.records if "completed upstream" in r.getMessage()]
        assert len(said) == 1

        waiting = poller(RulePolicy(ClosedPolicy.NEW_REQUEST, 100.0))
        await waiting.poll_once()  # completion seen now: the cooldown starts
        now[0] += 50
        await waiting.poll_once()
        assert await store.records(sink="cmms") == []
        now[0] += 51
        await waiting.poll_once()
        assert [r.episode_id for r in await store.records(sink="cmms")] == [
            reraise_episode_id("vib-high/pump-1/1")]
    finally:
        await sink.aclose()
        await store.close()


async def test_comment_is_one_outbox_record_however_often_it_is_seen(
        cmms: CmmsSimulator, tmp_path: Path) -> None:
    cfg = RestSinkConfig.model_validate({
        "type": "rest", "name": "cmms", "base_url": cmms.url,
        "auth": {"kind": "bearer", "token": {"value": "k"}}})
    sink = cfg.build()
    store = await OutboxStore.open(tmp_path / "outbox.sqlite")

    async def comment(rec: Any, raw: str, seen_at: float) -> None:
        await enqueue_comment(store, rec, raw, seen_at, "site")

    def poller() -> StatusPoller:
        return StatusPoller(sink, store, 60, reraise=lambda rec, now: None, comment=comment,
                            policy_for=lambda _: RulePolicy(ClosedPolicy.COMMENT))
    try:
        receipt = await _delivered(store, sink)
        cmms.set_status(receipt, "closed")
        first = poller()
        for _ in range(3):
            await first.poll_once()
        await poller().poll_once()  # a restart sees it completed again: the same record
        (pending,) = await store.records(sink="cmms", bodies=True)
        episode = "vib-high/pump-1/1"
        assert pending.key == f"closed-comment:{dedup_key(episode)}:{receipt}:cmms"
        assert (pending.episode_id, pending.kind) == (episode, "status_update")
        body = pending.body
        assert body is not None and body["update"] is True and body["status"] == "closed"
        assert str(body["note"]).startswith(f"{receipt} was completed upstream while "
                                            "vib-high on pump-1 is still active since ")
    finally:
        await sink.aclose()
        await store.close()
