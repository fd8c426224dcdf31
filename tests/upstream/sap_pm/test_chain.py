"""The SAP parts chain, step by step, over real sockets against the SAP simulator, and the hook
that enqueues each next step in the settle of the accepted one (a real SQLite outbox).

Assumed facts (UPSTREAM-WORKFLOW-APIS §3): unrestricted stock is InventoryStockType '01' [T];
ReservationItemText can be filtered [U]. Documented [S]: the deep inserts, the field names,
PurReqnExternalReference filterable, no notification field on a reservation.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from buffer.store import OutboxStore
from gateway.model import Delivery, MessageKind, OutboxRecord, Outcome
from gateway.workflow import PARTS_LANE_SUFFIX, follow_ups, low_parts
from simulators.sap_pm import SapPmSimulator
from tests.upstream.sap_pm.conftest import SinkFactory, record

PARTS = {"pump-1": {"BEARING": [
    {"material": "BRG-6205", "quantity": 2, "unit": "EA", "plant": "1010",
     "storage_location": "0001", "reorder_level": 4},
    {"material": "SEAL-40", "quantity": 1, "unit": "EA", "plant": "1010",
     "storage_location": "0001"}]}}


def chain_sink(make_sink: SinkFactory, sim: SapPmSimulator, **over: Any) -> Any:
    return make_sink(sim.url, **({"spare_parts": PARTS, "parts": {"cost_center": "CC-1"}}
                                 | over))


def with_body(rec: OutboxRecord, rid: int | None = None, **fields: Any) -> OutboxRecord:
    msg = replace(rec.message, body=dict(rec.message.body) | fields)
    return replace(rec, id=rec.id if rid is None else rid, message=msg)


def bearing_raise() -> OutboxRecord:
    return with_body(record(), failure_code="BEARING")


async def run_chain(sink: Any, first: OutboxRecord) -> list[tuple[OutboxRecord, Delivery]]:
    """Send `first`, then every step its acceptance makes due, as the forwarder would."""
    done = []
    queue = [first]
    rid = 1000
    while queue:
        rec = queue.pop(0)
        [d] = await sink.send([rec])
        done.append((rec, d))
        for _, msg in follow_ups(sink, [rec], [d]):
            rid += 1
            queue.append(OutboxRecord(id=rid, message=msg, attempts=0))
    return done


async def test_chain_reads_stock_reserves_and_orders(make_sink: SinkFactory,
                                                     sim: SapPmSimulator) -> None:
    sim.materials.set_stock("BRG-6205", "1010", "0001", 3, blocked=50)
    sim.materials.set_stock("SEAL-40", "1010", "0001", 9)
    done = await run_chain(chain_sink(make_sink, sim), bearing_raise())
    kinds = [(r.message.kind, d.outcome) for r, d in done]
    assert kinds == [(MessageKind.MAINTENANCE_REQUEST, Outcome.ACCEPTED),
                     (MessageKind.PARTS_STOCK, Outcome.ACCEPTED),
                     (MessageKind.PARTS_RESERVATION, Outcome.ACCEPTED),
                     (MessageKind.PARTS_REQUISITION, Outcome.ACCEPTED)]
    # blocked stock is not available stock
    assert done[1][1].receipt == '{"BRG-6205@1010/0001":3.0,"SEAL-40@1010/0001":9.0}'
    steps = [r for r, _ in done[1:]]
    assert {r.message.episode_id for r in steps} == {"ep-1" + PARTS_LANE_SUFFIX}
    assert all(r.message.body["request_ref"] == done[0][1].receipt for r in steps)
    [pr] = sim.materials.requisitions
    assert (pr["Material"], pr["RequestedQuantity"]) == ("BRG-6205", "3")


async def test_each_step_finds_its_own_document_instead_of_creating_again(
        make_sink: SinkFactory, sim: SapPmSimulator) -> None:
    sim.materials.set_stock("BRG-6205", "1010", "0001", 0)
    sink = chain_sink(make_sink, sim)
    done = await run_chain(sink, bearing_raise())
    for rec, first in done[2:]:  # the reservation and the requisition, sent once more
        [again] = await sink.send([rec])
        assert (again.outcome, again.receipt) == (Outcome.ACCEPTED, first.receipt)
        assert "exists already" in again.reason
    assert sim.materials.created == {"reservation": 1, "requisition": 1}


async def test_lost_answer_of_a_create_is_looked_up_not_repeated(
        make_sink: SinkFactory, sim: SapPmSimulator) -> None:
    sim.materials.set_stock("BRG-6205", "1010", "0001", 10)
    sink = chain_sink(make_sink, sim, unclear_retry_after_seconds=0)
    done = await run_chain(sink, bearing_raise())
    # the same step of another episode (its own reference): its create's answer is lost
    fresh = with_body(done[2][0], rid=99, dedup_key="PBOTHER0000000000000")
    sim.materials.hold("A_ReservationDocumentHeader", "drop")
    [lost] = await sink.send([fresh])
    assert lost.outcome is Outcome.RETRY and "may still commit" in lost.reason
    [found] = await sink.send([fresh])
    assert found.outcome is Outcome.ACCEPTED and "exists already" in found.reason
    assert sim.materials.created["reservation"] == 2  # ours from the chain, and this one


async def test_stock_fine_means_no_requisition(make_sink: SinkFactory,
                                               sim: SapPmSimulator) -> None:
    sim.materials.set_stock("BRG-6205", "1010", "0001", 4)  # at the level is not below it
    done = await run_chain(chain_sink(make_sink, sim), bearing_raise())
    assert [r.message.kind for r, _ in done][-1] is MessageKind.PARTS_RESERVATION
    assert sim.materials.created == {"reservation": 1, "requisition": 0}


async def test_failure_code_without_parts_has_no_chain(make_sink: SinkFactory,
                                                       sim: SapPmSimulator) -> None:
    done = await run_chain(chain_sink(make_sink, sim), record())  # failure_code ""
    assert len(done) == 1 and sim.materials.stock_reads == 0


async def test_a_refused_step_is_a_dead_letter_that_ends_the_chain(
        make_sink: SinkFactory, sim: SapPmSimulator) -> None:
    sink = chain_sink(make_sink, sim, parts={
        "cost_center": "CC-1", "reservation_service_path": "/sap/opu/odata/sap/API_NOPE"})
    done = await run_chain(sink, bearing_raise())
    assert [d.outcome for _, d in done] == [Outcome.ACCEPTED, Outcome.ACCEPTED,
                                            Outcome.REJECTED]
    assert "HTTP 404" in done[2][1].reason
    assert sim.materials.created == {"reservation": 0, "requisition": 0}


def test_order_quantity_brings_stock_back_to_the_reorder_level() -> None:
    parts = [p for p in PARTS["pump-1"]["BEARING"]]
    low = low_parts(parts, {"BRG-6205@1010/0001": 1.0, "SEAL-40@1010/0001": 0.0})
    assert [(p["material"], p["order_quantity"]) for p in low] == [("BRG-6205", 5.0)]


# --- the hook: next step enqueued in the settle of the accepted one -------------------------


async def test_settle_enqueues_the_next_step_once_and_only_when_accepted(
        tmp_path: Path, make_sink: SinkFactory, sim: SapPmSimulator) -> None:
    sink = chain_sink(make_sink, sim)
    store = await OutboxStore.open(tmp_path / "outbox.db")
    try:
        raise_rec = bearing_raise()
        await store.commit([], [raise_rec.message])
        [leased] = await store.lease("sap", 10, time.time())
        follow = follow_ups(sink, [leased], [Delivery(leased.id, Outcome.ACCEPTED,
                                                      receipt="10000020")])
        assert [m.kind for _, m in follow] == [MessageKind.PARTS_STOCK]
        # a retry settles nothing into the queue
        added = await store.settle_with_follow_ups(
            [Delivery(leased.id, Outcome.RETRY, reason="x", retry_after_seconds=0)],
            time.time(), follow)
        assert added == 0
        assert await store.settle_with_follow_ups(
            [Delivery(leased.id, Outcome.ACCEPTED, receipt="10000020")], time.time(),
            follow) == 1
        # settling the same record again (a replay) adds nothing
        assert await store.settle_with_follow_ups(
            [Delivery(leased.id, Outcome.ACCEPTED, receipt="10000020")], time.time(),
            follow) == 0
        [step] = await store.lease("sap", 10, time.time())
        assert step.message.kind is MessageKind.PARTS_STOCK
        assert step.message.episode_id == "ep-1#parts"
        assert step.message.body["request_ref"] == "10000020"
    finally:
        await store.close()


async def test_the_clear_does_not_wait_for_a_failing_parts_step(
        tmp_path: Path, make_sink: SinkFactory, sim: SapPmSimulator) -> None:
    from tests.upstream.sap_pm.conftest import clear_record

    sink = chain_sink(make_sink, sim)
    store = await OutboxStore.open(tmp_path / "outbox.db")
    try:
        raise_rec = bearing_raise()
        await store.commit([], [raise_rec.message])
        [leased] = await store.lease("sap", 10, time.time())
        ok = Delivery(leased.id, Outcome.ACCEPTED, receipt="10000020")
        await store.settle_with_follow_ups([ok], time.time(), follow_ups(sink, [leased], [ok]))
        [step] = await store.lease("sap", 10, time.time())
        await store.settle([Delivery(step.id, Outcome.RETRY, reason="stock service down",
                                     retry_after_seconds=3600)], time.time())
        await store.commit([], [clear_record(None).message])
        [clear] = await store.lease("sap", 10, time.time())
        assert clear.message.kind is MessageKind.STATUS_UPDATE
        assert clear.upstream_ref == "10000020"  # the raise's receipt, not the lane's
    finally:
        await store.close()


async def test_reservation_without_a_cost_center_is_refused_in_plain_words(
        make_sink: SinkFactory, sim: SapPmSimulator) -> None:
    done = await run_chain(chain_sink(make_sink, sim, parts={}), bearing_raise())
    assert done[-1][0].message.kind is MessageKind.PARTS_RESERVATION
    assert done[-1][1].outcome is Outcome.REJECTED
    assert "parts.cost_center is not set" in done[-1][1].reason
