"""The SAP simulator's materials services answer as the specs say, and do not de-duplicate:
what keeps the gateway from doubling a reservation must be the gateway's own look-up."""

from __future__ import annotations

from typing import Any

from gateway.upstream.sap_odata import entity_of, results_of
from simulators.sap_pm import SapPmSimulator
from simulators.sap_pm.materials import RESERVATION_PATH, STOCK_PATH
from tests.upstream.sap_pm.conftest import SinkFactory

ITEM = {"Product": "BRG-6205", "Plant": "1010", "StorageLocation": "0001",
        "ResvnItmRequiredQtyInEntryUnit": "2", "EntryUnit": "EA",
        "ReservationItemText": "PBX N1"}


def header(**item: Any) -> dict[str, Any]:
    return {"GoodsMovementType": "201", "CostCenter": "CC-1",
            "to_ReservationDocumentItem": [ITEM | item]}


async def test_identical_creates_make_two_reservations(make_sink: SinkFactory,
                                                       sim: SapPmSimulator) -> None:
    client = make_sink(sim.url).service_client(RESERVATION_PATH)
    numbers = []
    for _ in range(2):
        answer = await client.write("POST", "A_ReservationDocumentHeader", payload=header())
        assert answer.status == 201, answer.body
        numbers.append((entity_of(answer.body) or {})["Reservation"])
    assert numbers[0] != numbers[1]
    found = await client.read("A_ReservationDocumentItem", {
        "$filter": "ReservationItemText eq 'PBX N1'", "$format": "json"})
    assert len(results_of(found.body) or []) == 2


async def test_bad_reservations_are_refused_with_the_property_named(
        make_sink: SinkFactory, sim: SapPmSimulator) -> None:
    client = make_sink(sim.url).service_client(RESERVATION_PATH)
    for payload, prop in ((header(ResvnItmRequiredQtyInEntryUnit=2), "ResvnItmRequired"),
                          (header(MaintenanceNotification="10000020"), "MaintenanceNotification"),
                          (header(ReservationItemText="x" * 51), "ReservationItemText"),
                          ({"GoodsMovementType": "201", "to_ReservationDocumentItem": [ITEM]},
                           "account assignment")):
        answer = await client.write("POST", "A_ReservationDocumentHeader", payload=payload)
        assert answer.status == 400 and prop in answer.body.decode(), (prop, answer.body)
    assert sim.materials.created["reservation"] == 0


async def test_stock_rows_per_batch_and_stock_type(make_sink: SinkFactory,
                                                   sim: SapPmSimulator) -> None:
    sim.materials.set_stock("BRG-6205", "1010", "0001", 3, blocked=7)
    client = make_sink(sim.url).service_client(STOCK_PATH)
    answer = await client.read("A_MatlStkInAcctMod", {
        "$filter": "Material eq 'BRG-6205' and Plant eq '1010'", "$format": "json"})
    rows = results_of(answer.body) or []
    assert sorted((r["InventoryStockType"], r["MatlWrhsStkQtyInMatlBaseUnit"]) for r in rows) \
        == [("01", "1.500"), ("01", "1.500"), ("07", "7.000")]
