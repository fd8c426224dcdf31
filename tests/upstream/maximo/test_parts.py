"""The Maximo spare-parts chain at the sink: stock (MXAPIINVENTORY), reservation (MXAPIINVRES),
requisition (MXAPIPR [T]), each step made by gateway/workflow.py's `next_step` from the previous
one's delivery, against the simulator over real sockets. Each creating step looks its reference
up first (requestnum / externalrefid = dedup key [U]), so a repeat or a lost answer makes
nothing twice.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.model import Delivery, MessageKind, OutboxRecord, Outcome
from gateway.upstream.maximo import MaximoSink
from gateway.workflow import next_step
from simulators.maximo import MaximoSimulator
from tests.upstream.maximo.conftest import SinkFactory, raise_record

PARTS = {"pump-1": {"VIB": [
    {"material": "BRG-6205", "quantity": 2, "unit": "EA", "plant": "1010",
     "storage_location": "0001", "reorder_level": 4},
    {"material": "SEAL-40", "quantity": 1, "unit": "EA", "plant": "1010",
     "storage_location": "0001", "reorder_level": 2},
]}}


def parts_sink(make_sink: SinkFactory, url: str, **over: Any) -> MaximoSink:
    return make_sink(url, spare_parts=PARTS,
                     parts={"storerooms": {"0001": "CENTRAL"}}, unclear_retry_after_seconds=0,
                     **over)


async def step(sink: MaximoSink, rec: OutboxRecord) -> tuple[Delivery, OutboxRecord | None]:
    """Send `rec`; the next step's record when it was accepted and one is due."""
    [d] = await sink.send([rec])
    nxt = next_step(sink, rec, d)
    return d, None if nxt is None else OutboxRecord(id=rec.id + 1000, message=nxt, attempts=0)


async def run_chain(sink: MaximoSink) -> list[tuple[MessageKind, Delivery, OutboxRecord]]:
    done = []
    rec: OutboxRecord | None = raise_record()
    while rec is not None:
        d, nxt = await step(sink, rec)
        done.append((rec.message.kind, d, rec))
        rec = nxt
    return done


async def test_low_stock_reserves_every_part_and_orders_the_low_one(
        make_sink: SinkFactory, maximo: MaximoSimulator) -> None:
    maximo.set_stock("BRG-6205", "CENTRAL", "BEDFORD", 3)  # below its reorder level 4
    maximo.set_stock("SEAL-40", "CENTRAL", "BEDFORD", 5)
    maximo.set_stock("BRG-6205", "NORTH", "BEDFORD", 50)  # another storeroom: not counted
    sink = parts_sink(make_sink, maximo.url)
    done = await run_chain(sink)
    assert [k for k, _, _ in done] == [MessageKind.MAINTENANCE_REQUEST, MessageKind.PARTS_STOCK,
                                       MessageKind.PARTS_RESERVATION,
                                       MessageKind.PARTS_REQUISITION]
    assert all(d.outcome is Outcome.ACCEPTED for _, d, _ in done)
    [sr] = maximo.tickets
    key = sr["externalrecid"]
    assert done[1][1].receipt == '{"BRG-6205@1010/0001":3.0,"SEAL-40@1010/0001":5.0}'
    res = maximo.reservations
    assert sorted((r["itemnum"], r["reservedqty"], r["location"]) for r in res) == [
        ("BRG-6205", 2.0, "CENTRAL"), ("SEAL-40", 1.0, "CENTRAL")]
    assert all(r["requestnum"] == key and r["assetnum"] == "PUMP-1"
               and r["storelocsiteid"] == "BEDFORD" and "wonum" not in r for r in res)
    assert done[2][1].receipt == ",".join(r["invreserveid"] for r in res)
    [pr] = maximo.requisitions
    assert pr["externalrefid"] == key and sr["ticketid"] in pr["description"]
    # 3 in stock, reorder level 4, 2 taken: order 4 - 3 + 2 = 3
    assert [(ln["itemnum"], ln["orderqty"], ln["storeloc"]) for ln in pr["prline"]] == [
        ("BRG-6205", 3.0, "CENTRAL")]
    assert done[3][1].receipt == pr["prnum"]
    # every step again (a crash before its settle): found by its reference, nothing new
    for _, d, rec in done:
        [again] = await sink.send([replace(rec, attempts=1)])
        assert (again.outcome, again.receipt) == (Outcome.ACCEPTED, d.receipt)
    assert (len(maximo.tickets), len(maximo.reservations), len(maximo.requisitions)) == (1, 2, 1)


async def test_stock_fine_no_requisition_and_no_parts_no_chain(
        make_sink: SinkFactory, maximo: MaximoSimulator) -> None:
    maximo.set_stock("BRG-6205", "CENTRAL", "BEDFORD", 12)
    maximo.set_stock("SEAL-40", "CENTRAL", "BEDFORD", 12)
    done = await run_chain(parts_sink(make_sink, maximo.url))
    assert done[-1][0] is MessageKind.PARTS_RESERVATION and maximo.requisitions == []
    plain = make_sink(maximo.url)  # no registry parts: the raise is the whole story
    d, nxt = await step(plain, raise_record(episode="ep-2"))
    assert d.outcome is Outcome.ACCEPTED and nxt is None


async def test_a_lost_answer_creates_only_what_is_missing(
        make_sink: SinkFactory, maximo: MaximoSimulator) -> None:
    maximo.set_stock("BRG-6205", "CENTRAL", "BEDFORD", 1)
    maximo.set_stock("SEAL-40", "CENTRAL", "BEDFORD", 1)
    sink = parts_sink(make_sink, maximo.url)
    _, stock = await step(sink, raise_record())
    assert stock is not None
    _, reservation = await step(sink, stock)
    assert reservation is not None
    maximo.faults.set("drop_after_commit", count=1)  # the first reservation commits, unheard
    [lost] = await sink.send([reservation])
    assert lost.outcome is Outcome.RETRY and len(maximo.reservations) == 1
    d, requisition = await step(sink, replace(reservation, attempts=1))
    assert d.outcome is Outcome.ACCEPTED and len(maximo.reservations) == 2
    assert requisition is not None
    maximo.faults.set("drop_after_commit", count=1)
    [lost] = await sink.send([requisition])
    assert lost.outcome is Outcome.RETRY
    [made] = await sink.send([replace(requisition, attempts=1)])
    assert made.outcome is Outcome.ACCEPTED and len(maximo.requisitions) == 1


async def test_a_bad_item_is_a_dead_letter_with_maximo_words(
        make_sink: SinkFactory, maximo: MaximoSimulator) -> None:
    maximo.set_stock("BRG-6205", "CENTRAL", "BEDFORD", 9)  # SEAL-40 is not stocked there
    sink = parts_sink(make_sink, maximo.url)
    _, stock = await step(sink, raise_record())
    assert stock is not None
    d, reservation = await step(sink, stock)
    assert d.outcome is Outcome.ACCEPTED and '"SEAL-40@1010/0001":0.0' in str(d.receipt)
    assert reservation is not None
    [dead] = await sink.send([reservation])
    assert dead.outcome is Outcome.REJECTED and "SEAL-40" in dead.reason
    assert "not stocked" in dead.reason


async def test_a_linked_work_order_is_named_in_the_reservation(
        make_sink: SinkFactory, maximo: MaximoSimulator) -> None:
    wo = maximo.plant_work_order("PUMP-1", status="APPR", failurecode="VIB")
    maximo.set_stock("BRG-6205", "CENTRAL", "BEDFORD", 9)
    maximo.set_stock("SEAL-40", "CENTRAL", "BEDFORD", 9)
    done = await run_chain(parts_sink(make_sink, maximo.url, existing_work="link"))
    assert done[0][1].receipt == f"WO:{wo['wonum']}" and maximo.tickets == []
    assert {r["wonum"] for r in maximo.reservations} == {wo["wonum"]}
