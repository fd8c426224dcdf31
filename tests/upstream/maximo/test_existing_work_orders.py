"""Existing work first, Maximo work orders: an open WO on the asset with the rule's failure code
(or none) is linked or skipped to instead of a new SR; its receipt is "WO:<wonum>", the clear
notes it there (never completes it), and the status poll reads the WO's status back.
Real sockets, the Maximo simulator.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.model import Outcome
from gateway.status_poll import WorkState
from gateway.workflow import ExistingWork
from simulators.maximo import MaximoSimulator
from tests.upstream.maximo.conftest import SinkFactory, clear_record, raise_record

LINK = {"vib-high": ExistingWork.LINK}  # the conftest's rule has failure code VIB


def notes(wo: dict[str, object]) -> list[str]:
    return [str(w["description"]) for w in wo["worklog"]]  # type: ignore[attr-defined]


async def test_open_wo_with_the_same_failure_code_is_linked_and_cleared_as_a_note(
        make_sink: SinkFactory, maximo: MaximoSimulator) -> None:
    wo = maximo.plant_work_order("PUMP-1", status="APPR", failurecode="VIB")
    sink = make_sink(maximo.url, existing_work_rules=LINK)
    rec = raise_record()
    [d] = await sink.send([rec])
    assert (d.outcome, d.receipt) == (Outcome.ACCEPTED, f"WO:{wo['wonum']}")
    assert "linked" in d.reason and maximo.tickets == []
    [again] = await sink.send([replace(rec, attempts=1)])  # a repeat adds no second note
    assert again.receipt == d.receipt
    assert len([n for n in notes(wo) if n.startswith("PlantBridge evidence")]) == 1
    [cleared] = await sink.send([clear_record(d.receipt)])
    [twice] = await sink.send([clear_record(d.receipt)])
    assert (cleared.outcome, twice.outcome) == (Outcome.ACCEPTED, Outcome.ACCEPTED)
    assert len([n for n in notes(wo) if n.startswith("Condition cleared")]) == 1
    assert wo["status"] == "APPR"  # someone else's: never completed by us


async def test_skip_writes_nothing_and_the_clear_leaves_the_wo_alone(
        make_sink: SinkFactory, maximo: MaximoSimulator) -> None:
    wo = maximo.plant_work_order("PUMP-1", status="INPRG", failurecode="VIB")
    sink = make_sink(maximo.url, existing_work="skip")
    [d] = await sink.send([raise_record()])
    assert d.receipt == f"WO:{wo['wonum']}" and "skipped" in d.reason
    [cleared] = await sink.send([clear_record(d.receipt)])
    assert cleared.outcome is Outcome.ACCEPTED and notes(wo) == []


async def test_another_failure_code_is_other_work(make_sink: SinkFactory,
                                                 maximo: MaximoSimulator) -> None:
    maximo.plant_work_order("PUMP-1", status="WAPPR", failurecode="ELEC")
    maximo.plant_work_order("PUMP-1", status="COMP", failurecode="VIB")  # closed: not open
    maximo.plant_work_order("FAN-1", status="WAPPR", failurecode="VIB")  # another asset
    sink = make_sink(maximo.url, existing_work_rules=LINK)
    [d] = await sink.send([raise_record()])
    assert d.outcome is Outcome.ACCEPTED and not d.receipt.startswith("WO:")  # type: ignore[union-attr]
    assert [t["ticketid"] for t in maximo.tickets] == [d.receipt]  # our own SR was made
    assert all(notes(w) == [] for w in maximo.work_orders)


@pytest.mark.parametrize(("codes", "expected"), [
    (["VIB", None], "WO-VIB"),  # same failure code beats an SR and an unclassified WO
    ([None], "SR"),  # an open SR ranks above a WO without a failure code
    (["ELEC"], "SR"),
])
async def test_ranking_between_srs_and_work_orders(
        make_sink: SinkFactory, maximo: MaximoSimulator, codes: list[str | None],
        expected: str) -> None:
    sr = maximo.store.create({"description": "noisy", "assetnum": "PUMP-1",
                              "siteid": "BEDFORD", "reportedpriority": 3})
    wos = {c: maximo.plant_work_order("PUMP-1", failurecode=c) for c in codes}
    sink = make_sink(maximo.url, existing_work="skip")
    [d] = await sink.send([raise_record()])
    want = sr["ticketid"] if expected == "SR" else f"WO:{wos['VIB']['wonum']}"
    assert d.receipt == want


async def test_only_an_unclassified_wo_is_used_and_wo_lookup_can_be_off(
        make_sink: SinkFactory, maximo: MaximoSimulator) -> None:
    wo = maximo.plant_work_order("PUMP-1", status="WSCH")
    [d] = await make_sink(maximo.url, existing_work="skip").send([raise_record()])
    assert d.receipt == f"WO:{wo['wonum']}"
    [own] = await make_sink(maximo.url, existing_work="skip", wo_object_structure="").send(
        [raise_record(episode="ep-2")])
    assert own.receipt == maximo.tickets[0]["ticketid"]  # SRs only: ours was created


@pytest.mark.parametrize(("status", "state"), [
    ("WAPPR", WorkState.CREATED), ("WMATL", WorkState.CREATED), ("INPRG", WorkState.IN_PROGRESS),
    ("COMP", WorkState.COMPLETED), ("CLOSE", WorkState.COMPLETED), ("CAN", WorkState.COMPLETED),
])
async def test_status_poll_reads_the_work_order(make_sink: SinkFactory, maximo: MaximoSimulator,
                                                status: str, state: WorkState) -> None:
    wo = maximo.plant_work_order("PUMP-1", status=status)
    sink = make_sink(maximo.url)
    got = await sink.read_record(f"WO:{wo['wonum']}")
    assert got is not None and (got.id, got.state, got.raw) == (
        f"WO:{wo['wonum']}", state, status)
    assert await sink.read_record("WO:99999") is None


async def test_sr_receipts_read_back_as_before(make_sink: SinkFactory,
                                               maximo: MaximoSimulator) -> None:
    sink = make_sink(maximo.url)
    [d] = await sink.send([raise_record()])
    got = await sink.read_record(str(d.receipt))
    assert got is not None and (got.id, got.state) == (d.receipt, WorkState.CREATED)
    assert [r.id for r in await sink.records_by_reference(str(got.external_ref))] == [d.receipt]


async def test_a_missing_work_order_structure_says_what_to_set(
        make_sink: SinkFactory, maximo: MaximoSimulator) -> None:
    sink = make_sink(maximo.url, existing_work="link", wo_object_structure="mxapiwonosuch")
    [d] = await sink.send([raise_record()])
    assert d.outcome is Outcome.REJECTED and "set wo_object_structure" in d.reason
    assert maximo.tickets == []  # nothing created blind
