"""The workflow per episode (gateway/page_workflow.py), each step state, without a browser.

The records go through a real OutboxStore the way the forwarder moves them (lease, settle with
the parts chain's follow-ups, attempts recorded), and the steps are read back from it: what the
page and `trace` show is what the outbox holds, so a restart changes nothing. The SAP-shaped
receipts are the adapter's (a notification number, the stock JSON, reservation and
requisition numbers); the upstream is the forwarder's partner here, not under test.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from buffer.attempts import Attempt
from buffer.operator import UpstreamStatusRow
from buffer.store import OutboxStore
from gateway import trace as trace_mod
from gateway.messages import messages_for
from gateway.model import (
    Delivery,
    MessageKind,
    OutboxRecord,
    Outcome,
    RequestDetails,
    Transition,
    TransitionKind,
)
from gateway.page import assets_section
from gateway.page_episode import render_episode
from gateway.page_model import record_link
from gateway.page_workflow import NOT_POLLED, Workflow, card_summary, render_html, workflows
from gateway.workflow import PartLine, follow_ups, stock_receipt

T0 = 1_800_000_000.0
SINK = "sap"
PARTS = [PartLine(material="BRG-6205", quantity=2, unit="EA", plant="1010",
                  storage_location="0001", reorder_level=4),
         PartLine(material="SEAL-40", quantity=1, unit="EA", plant="1010",
                  storage_location="0001", reorder_level=2)]
LOW = {"BRG-6205@1010/0001": 3.0, "SEAL-40@1010/0001": 5.0}  # the bearing below its level
FINE = {"BRG-6205@1010/0001": 9.0, "SEAL-40@1010/0001": 5.0}


class PartsSink:
    """The side of a sink the chain asks (gateway/workflow.py ChainingSink): which parts."""

    name = SINK

    def parts_for(self, asset: str, failure_code: str) -> list[PartLine]:
        return PARTS if failure_code == "BEARING" else []


def _transition(kind: TransitionKind, episode: str, ts: float, code: str) -> Transition:
    return Transition(kind, "bearing-wear", "pump-1", "vibration", episode, 2, 8.0, ts,
                      "vibration 8 above 7.1", RequestDetails("Bearing wear", failure_code=code))


class Outbox:
    """A real store, moved as the forwarder moves it."""

    def __init__(self, store: OutboxStore) -> None:
        self.store = store
        self.now = T0

    async def raise_(self, episode: str, code: str = "BEARING") -> None:
        t = _transition(TransitionKind.RAISED, episode, self.now, code)
        await self.store.commit([t], messages_for(t, [SINK], "site"))

    async def clear(self, episode: str) -> None:
        self.now += 1
        t = _transition(TransitionKind.CLEARED, episode, self.now, "BEARING")
        await self.store.commit([t], messages_for(t, [SINK], "site"))

    async def deliver(self, episode: str, kind: MessageKind, outcome: Outcome,
                      receipt: str | None = None, reason: str = "") -> OutboxRecord:
        self.now += 1
        leased = await self.store.lease(SINK, 50, self.now + 3600)
        [rec] = [r for r in leased if r.message.kind is kind
                 and r.message.episode_id.startswith(episode)]
        d = Delivery(rec.id, outcome, receipt=receipt, reason=reason)
        await self.store.settle_with_follow_ups([d], self.now,
                                                follow_ups(PartsSink(), [rec], [d]))
        await self.store.record_attempts([Attempt(
            rec.id, rec.message.key, SINK, rec.message.episode_id, self.now - 0.5, self.now,
            outcome.value, 200 if outcome is Outcome.ACCEPTED else 400, 12.0, reason, receipt,
            rec.attempts + 1)])
        return rec

    async def flows(self, episode: str) -> list[Workflow]:
        found = await self.store.trace(episode)
        assert found is not None
        polled = await self.store.upstream_status(episode_id=episode)
        d = trace_mod.as_dict(found, polled)
        return workflows(d["messages"], d["upstream_status"], d["episode"]["cleared_at"])


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    async with await OutboxStore.open(tmp_path / "outbox.db") as store:
        yield Outbox(store)


def states(wf: Workflow) -> list[tuple[str, str]]:
    return [(s.name, s.state) for s in wf.steps]


async def test_each_step_waits_fails_is_accepted_or_dead_lettered(outbox: Outbox) -> None:
    ep = "bearing-wear/pump-1/1"
    await outbox.raise_(ep)
    [wf] = await outbox.flows(ep)
    assert states(wf) == [("request", "waiting"), ("stock", "waiting"),
                          ("reservation", "waiting"), ("requisition", "waiting"),
                          ("upstream", "waiting"), ("clear", "waiting")]
    assert wf.steps[-1].detail == "the condition is still active"
    assert card_summary(wf) is None  # no chain yet: the card says nothing about parts

    await outbox.deliver(ep, MessageKind.MAINTENANCE_REQUEST, Outcome.RETRY,
                         reason="HTTP 503: busy")
    [wf] = await outbox.flows(ep)
    req = wf.steps[0]
    assert (req.state, req.attempts, req.error) == ("failing", 1, "HTTP 503: busy")
    assert req.detail == "failing after 1 attempt: HTTP 503: busy"

    await outbox.deliver(ep, MessageKind.MAINTENANCE_REQUEST, Outcome.ACCEPTED, "10000001")
    [wf] = await outbox.flows(ep)
    assert states(wf)[:3] == [("request", "accepted"), ("stock", "waiting"),
                              ("reservation", "waiting")]
    assert wf.steps[0].receipt == "10000001" and wf.steps[0].attempts == 2
    assert wf.steps[1].detail == "queued, not sent yet" and wf.steps[1].record_id is not None
    assert wf.step("upstream") is not None
    assert wf.steps[4].detail == NOT_POLLED
    assert card_summary(wf) == "parts: checking stock"

    await outbox.deliver(ep, MessageKind.PARTS_STOCK, Outcome.RETRY, reason="")
    [wf] = await outbox.flows(ep)
    assert (wf.steps[1].state, wf.steps[1].attempts) == ("sent", 1)  # no answer to judge

    await outbox.deliver(ep, MessageKind.PARTS_STOCK, Outcome.ACCEPTED, stock_receipt(LOW))
    [wf] = await outbox.flows(ep)
    stock = wf.steps[1]
    assert stock.state == "accepted"
    assert stock.detail == "levels seen: BRG-6205@1010/0001 3, SEAL-40@1010/0001 5"
    assert card_summary(wf) == "parts: reserving"

    dead = await outbox.deliver(ep, MessageKind.PARTS_RESERVATION, Outcome.REJECTED,
                                reason="HTTP 400: M7/021 material BRG-6205 not in plant")
    [wf] = await outbox.flows(ep)
    res = wf.steps[2]
    assert res.state == "dead-lettered" and res.record_id == dead.id
    assert "M7/021 material BRG-6205 not in plant" in res.detail
    assert f"plantbridge dead-letters --requeue {dead.id}" in res.detail
    assert wf.steps[3].state == "waiting"  # the requisition never comes after a dead step
    assert card_summary(wf) == "parts: reservation REFUSED (dead letter)"
    await outbox.store.requeue_dead([dead.id])  # `plantbridge dead-letters --requeue`
    [wf] = await outbox.flows(ep)
    assert (wf.steps[2].state, wf.steps[2].attempts) == ("waiting", 0)
    assert wf.steps[2].detail == ("queued, not sent yet (requeued; it was refused: HTTP 400: "
                                  "M7/021 material BRG-6205 not in plant)")
    await outbox.deliver(ep, MessageKind.PARTS_RESERVATION, Outcome.REJECTED,
                         reason="HTTP 400: M7/021 material BRG-6205 not in plant")
    # ... and the request's clear is not held up by it
    await outbox.clear(ep)
    await outbox.deliver(ep, MessageKind.STATUS_UPDATE, Outcome.ACCEPTED, "10000001")
    [wf] = await outbox.flows(ep)
    assert wf.steps[-1].state == "accepted" and wf.steps[-1].detail.startswith("cleared 20")


async def test_low_stock_orders_and_upstream_history_reads_back(outbox: Outbox) -> None:
    ep = "bearing-wear/pump-1/2"
    await outbox.raise_(ep)
    await outbox.deliver(ep, MessageKind.MAINTENANCE_REQUEST, Outcome.ACCEPTED, "10000002")
    await outbox.deliver(ep, MessageKind.PARTS_STOCK, Outcome.ACCEPTED, stock_receipt(LOW))
    await outbox.deliver(ep, MessageKind.PARTS_RESERVATION, Outcome.ACCEPTED, "1000000")
    [wf] = await outbox.flows(ep)
    assert states(wf)[3] == ("requisition", "waiting")  # enqueued, not sent yet
    assert card_summary(wf) == "parts: reserved 2 items, requisition on its way"
    await outbox.deliver(ep, MessageKind.PARTS_REQUISITION, Outcome.ACCEPTED, "10001001")
    await outbox.store.record_upstream_status([
        UpstreamStatusRow(SINK, ep, "10000002", state, raw, T0 + 100 + i)
        for i, (state, raw) in enumerate((("created", "OSNO"), ("in_progress", "NOPR"),
                                          ("completed", "NOCO")))])
    [wf] = await outbox.flows(ep)
    assert states(wf) == [("request", "accepted"), ("stock", "accepted"),
                          ("reservation", "accepted"), ("requisition", "accepted"),
                          ("upstream", "completed"), ("clear", "waiting")]
    assert [s.receipt for s in wf.steps[:4]] == ["10000002", stock_receipt(LOW), "1000000",
                                                 "10001001"]
    up = wf.steps[4]
    assert [h["state"] for h in up.history] == ["created", "in_progress", "completed"]
    assert re.fullmatch(r"created 20\S+Z \(OSNO\) \u2192 in progress 20\S+Z \(NOPR\) \u2192 "
                        r"completed 20\S+Z \(NOCO\)", up.detail), up.detail
    assert card_summary(wf) == "parts: reserved 2 items, requisition 10001001"
    # `plantbridge trace` prints the same steps, each with its attempts
    found = await outbox.store.trace("10001001")  # the requisition's number finds the episode
    assert found is not None and found.episode_id == ep
    text = trace_mod.format_text(found, await outbox.store.upstream_status(episode_id=ep))
    flow = [line.split(None, 2) for line in text[text.index("workflow at sap:"):].splitlines()]
    assert [f[:2] for f in flow[1:]] == [[s.name, s.state] for s in wf.steps]
    assert flow[4][2] == "requisition 10001001 (1 attempt)"
    assert flow[2][2].endswith("SEAL-40@1010/0001 5 (1 attempt)")

    html = render_html([wf], lambda sink, r: record_link(
        {SINK: "https://sap.example/notif/{receipt}"}, sink, r))
    rows = re.findall(r'<tr class="step ([\w-]+)" data-step="(\w+)" data-state="([\w -]+)"',
                      html)
    assert [(step, state) for _, step, state in rows] == states(wf)
    assert '<a class="record" href="https://sap.example/notif/10000002">10000002</a>' in html
    assert "requisition 10001001" in html


async def test_stock_above_reorder_level_needs_no_requisition(outbox: Outbox) -> None:
    ep = "bearing-wear/pump-1/3"
    await outbox.raise_(ep)
    await outbox.deliver(ep, MessageKind.MAINTENANCE_REQUEST, Outcome.ACCEPTED, "10000003")
    await outbox.deliver(ep, MessageKind.PARTS_STOCK, Outcome.ACCEPTED, stock_receipt(FINE))
    await outbox.deliver(ep, MessageKind.PARTS_RESERVATION, Outcome.ACCEPTED, "1000001")
    [wf] = await outbox.flows(ep)
    req = wf.step("requisition")
    assert req is not None and (req.state, req.detail) == (
        "not needed", "stock at or above reorder level")
    assert card_summary(wf) == "parts: reserved 2 items, no requisition needed"


async def test_no_parts_listed_is_said_once(outbox: Outbox) -> None:
    ep = "bearing-wear/pump-1/4"
    await outbox.raise_(ep, code="ELECTRICAL")
    await outbox.deliver(ep, MessageKind.MAINTENANCE_REQUEST, Outcome.ACCEPTED, "10000004")
    [wf] = await outbox.flows(ep)
    assert states(wf) == [("request", "accepted"), ("parts", "not needed"),
                          ("upstream", "waiting"), ("clear", "waiting")]
    assert card_summary(wf) is None


async def test_episode_page_and_card_show_the_steps(outbox: Outbox) -> None:
    ep = "bearing-wear/pump-1/5"
    await outbox.raise_(ep)
    await outbox.deliver(ep, MessageKind.MAINTENANCE_REQUEST, Outcome.ACCEPTED, "WO:5001")
    await outbox.deliver(ep, MessageKind.PARTS_STOCK, Outcome.ACCEPTED, stock_receipt(FINE))
    page = await render_episode(ep, outbox=outbox.store, trends=None, defs=[], instances=[],
                                record_urls={SINK: "https://mx.example/ui/?event=loadapp&"
                                                   "value={kind}&id={receipt}"})
    assert page is not None
    assert '<tr class="step accepted" data-step="stock" data-state="accepted">' in page
    assert '<tr class="step waiting" data-step="reservation" data-state="waiting">' in page
    link = 'href="https://mx.example/ui/?event=loadapp&amp;value=wotrack&amp;id=5001"'
    assert page.count(link) == 2  # in the records list and on the request's step
    assert "levels seen: BRG-6205@1010/0001 9, SEAL-40@1010/0001 5" in page

    card = {"asset": "pump-1", "state": "raised", "signals": [], "conditions": [{
        "rule_id": "bearing-wear", "episode_id": ep, "upstreams": [],
        "parts": ["parts: reserved 2 items, requisition 10001001"]}]}
    section = assets_section({"assets": [card], "now": T0}, None)
    assert '<span class="parts">parts: reserved 2 items, requisition 10001001</span>' in section


def test_record_links_for_service_requests_and_work_orders() -> None:
    kinds = {"mx": "https://mx.example/maximo/ui/?event=loadapp&value={kind}&uid={receipt}",
             "sr_only": "https://mx.example/sr/{receipt}", "none": None}
    assert record_link(kinds, "mx", "WO:5001") == \
        "https://mx.example/maximo/ui/?event=loadapp&value=wotrack&uid=5001"
    assert record_link(kinds, "mx", "1001") == \
        "https://mx.example/maximo/ui/?event=loadapp&value=sr&uid=1001"
    # a template for one kind of record: the SR links, a work order would open the wrong one
    assert record_link(kinds, "sr_only", "1001") == "https://mx.example/sr/1001"
    assert record_link(kinds, "sr_only", "WO:5001") is None
    assert record_link(kinds, "mx", "WO:") is None
    assert record_link(kinds, "none", "1001") is None
    assert record_link(kinds, "mx", "") is None
    assert record_link(kinds, "sr_only", "a/b c") == "https://mx.example/sr/a%2Fb%20c"


async def test_the_steps_read_the_same_after_a_restart(tmp_path: Path) -> None:
    ep = "bearing-wear/pump-1/6"
    async with await OutboxStore.open(tmp_path / "o.db") as store:
        ob = Outbox(store)
        await ob.raise_(ep)
        await ob.deliver(ep, MessageKind.MAINTENANCE_REQUEST, Outcome.ACCEPTED, "10000006")
        await ob.deliver(ep, MessageKind.PARTS_STOCK, Outcome.ACCEPTED, stock_receipt(LOW))
        await ob.deliver(ep, MessageKind.PARTS_RESERVATION, Outcome.RETRY, reason="HTTP 503")
        before = await ob.flows(ep)
    assert states(before[0])[2] == ("reservation", "failing")
    async with await OutboxStore.open(tmp_path / "o.db") as store:  # a new process, say
        after = await Outbox(store).flows(ep)
    assert after == before
    assert card_summary(after[0]) == "parts: reservation failing (1 attempt)"
