"""The bearing-failure workflow end to end: MQTT in, the real daemon, the SAP simulator as upstream.

Vibration on pump-1 raises a rule with failure code BEARING; the asset registry lists two parts
for it. Expected at the simulator: one notification, one reservation whose items are the
registry's parts (naming the notification), one purchase requisition for the part whose stock is
below its reorder level, none when stock is fine. An open notification someone else made, under
`existing_work = "link"` / `"skip"`, is used instead of a new one.

Assumed facts (UPSTREAM-WORKFLOW-APIS): unrestricted stock is InventoryStockType '01' [T];
ReservationItemText is filterable [U]; notification phases "2"/"3" are open [U].
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.trace import as_dict
from simulators.sap_pm import SapPmSimulator
from tests.e2e.stack import Stack
from tests.harness import wait_for

ASSETS = """
[assets.pump-1]
sap = { equipment = "4711", planning_plant = "1010" }

[[assets.pump-1.spare_parts.BEARING]]
material = "BRG-6205"
quantity = 2
unit = "EA"
plant = "1010"
storage_location = "0001"
reorder_level = 4

[[assets.pump-1.spare_parts.BEARING]]
material = "SEAL-40"
quantity = 1
unit = "EA"
plant = "1010"
storage_location = "0001"
reorder_level = 2
"""

RULE = """
[[rule]]
id = "bearing-wear"
kind = "threshold"
asset = "pump-1"
signal = "vibration"
above = 7.1
clear_below = 6.0
on_delay_seconds = 0.3
off_delay_seconds = 0.3
severity = 2
failure_code = "{code}"
title = "Bearing wear on {{asset}}"
{policy}
"""


def sap_upstream(sim: SapPmSimulator, unclear_seconds: float = 2.0, parts: str = "") -> str:
    return f"""
[[upstreams]]
type = "sap_pm"
name = "sap"
sap_client = "100"
base_url = "{sim.url}"
auth = {{ kind = "basic", user = "PB_COMM", password = {{ value = "secret" }} }}
total_timeout_seconds = 5
unclear_retry_after_seconds = {unclear_seconds}
[upstreams.parts]
cost_center = "4711-CC"
{parts}
"""


def configure(stack: Stack, sim: SapPmSimulator, *, code: str = "BEARING", policy: str = "",
              http_port: int = 0, parts: str = "") -> None:
    (stack.tmp / "assets.toml").write_text(ASSETS)
    path = stack.write_config(RULE.format(code=code, policy=policy),
                              upstream=sap_upstream(sim, parts=parts), http_port=http_port)
    path.write_text(path.read_text().replace('site = "e2e"',
                                             'site = "e2e"\nassets_file = "assets.toml"', 1))


@pytest.fixture
async def sap() -> AsyncIterator[SapPmSimulator]:
    sim = SapPmSimulator(port=0, equipment=["4711"])
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def chain_done(sim: SapPmSimulator, requisitions: int) -> bool:
    m = sim.materials
    return len(m.reservation_numbers()) >= 1 and len(m.requisition_numbers()) >= requisitions


async def raise_and_clear(stack: Stack) -> None:
    await stack.play("pump-1", [3.0] * 2 + [8.0] * 12)


async def test_bearing_failure_reserves_parts_and_orders_what_is_low(
        stack: Stack, sap: SapPmSimulator) -> None:
    sap.materials.set_stock("BRG-6205", "1010", "0001", 3, blocked=10)  # 3 < reorder level 4
    sap.materials.set_stock("SEAL-40", "1010", "0001", 5)
    configure(stack, sap)
    await stack.start_daemon()
    await raise_and_clear(stack)
    await wait_for(lambda: chain_done(sap, 1), 20, "reservation and requisition made")
    await stack.play("pump-1", [3.0] * 12)
    await wait_for(lambda: str(sap.notifications[0].get("NotifProcessingPhase")) == "4", 20,
                   "the clear completed the notification")
    await stack.settled()

    [notif] = sap.notifications
    number = notif["MaintenanceNotification"]
    resv = sap.materials.reservations
    assert sorted((r["Product"], r["ResvnItmRequiredQtyInEntryUnit"], r["EntryUnit"])
                  for r in resv) == [("BRG-6205", "2", "EA"), ("SEAL-40", "1", "EA")]
    assert {r["Reservation"] for r in resv} == {"1000000"}  # one document, two items
    assert all(r["ReservationItemText"].endswith(f"N{number}") for r in resv)
    assert all(r["StorageLocation"] == "0001" and r["Plant"] == "1010" for r in resv)
    [pr] = sap.materials.requisitions  # only the bearing is below its reorder level
    # stock 3 counts only unrestricted stock (the 10 blocked do not), reorder level 4,
    # 2 taken: order 4 - 3 + 2 = 3
    assert (pr["Material"], pr["RequestedQuantity"]) == ("BRG-6205", "3")
    assert pr["PurReqnExternalReference"] == notif["MaintNotifExtReferenceNumber"]
    assert sap.materials.created == {"reservation": 1, "requisition": 1}
    # `trace` tells the episode with its parts steps, each with its own upstream id
    assert stack.daemon is not None and stack.daemon.outbox is not None
    found = await stack.daemon.outbox.trace(notif["MaintNotifExtReferenceNumber"])
    assert found is not None
    story = as_dict(found)
    steps = {m["kind"]: m for m in story["messages"]}
    assert steps["maintenance_request"]["receipt"] == number
    assert steps["parts_stock"]["receipt"] == '{"BRG-6205@1010/0001":3.0,"SEAL-40@1010/0001":5.0}'
    assert steps["parts_reservation"]["receipt"] == "1000000"
    assert steps["parts_requisition"]["receipt"] == pr["PurchaseRequisition"]
    assert steps["parts_requisition"]["facts"]["request_ref"] == number
    assert {m["state"] for m in story["messages"]} == {"delivered"}


async def test_no_requisition_when_stock_is_fine(stack: Stack, sap: SapPmSimulator) -> None:
    sap.materials.set_stock("BRG-6205", "1010", "0001", 12)
    sap.materials.set_stock("SEAL-40", "1010", "0001", 5)
    configure(stack, sap)
    await stack.start_daemon()
    await raise_and_clear(stack)
    await wait_for(lambda: chain_done(sap, 0), 20, "reservation made")
    await stack.settled()
    assert len(sap.notifications) == 1
    assert sap.materials.created == {"reservation": 1, "requisition": 0}
    assert stack.daemon is not None and stack.daemon.outbox is not None
    stats = await stack.daemon.outbox.stats(0)
    assert stats.dead == {} or not any(stats.dead.values()), stats.dead


async def test_a_failing_parts_step_holds_back_neither_requests_nor_the_clear(
        stack: Stack, sap: SapPmSimulator) -> None:
    configure(stack, sap, parts='stock_service_path = "/sap/opu/odata/sap/API_GONE_SRV"')
    await stack.start_daemon()
    await raise_and_clear(stack)
    await stack.play("pump-1", [3.0] * 12)
    await wait_for(lambda: len(sap.notifications) == 1 and str(
        sap.notifications[0].get("NotifProcessingPhase")) == "4", 20, "raised and cleared")
    await stack.settled()
    assert sap.materials.created == {"reservation": 0, "requisition": 0}
    assert stack.daemon is not None and stack.daemon.outbox is not None
    [dead] = await stack.daemon.outbox.records(dead=True)
    assert dead.kind == "parts_stock" and "HTTP 404" in dead.last_error


def someone_elses(sap: SapPmSimulator) -> dict[str, Any]:
    """An open notification on equipment 4711 that a planner made by hand."""
    item = sap.store.create({"NotificationText": "Pump 1 noisy", "NotificationType": "M1",
                             "TechnicalObject": "4711", "TechObjIsEquipOrFuncnlLoc": "EAMS_EQUI",
                             "MaintPriority": "3"}, "PLANNER")
    return item.data


@pytest.mark.parametrize("policy", ["link", "skip"])
async def test_existing_open_notification_is_used_not_duplicated(
        stack: Stack, sap: SapPmSimulator, policy: str) -> None:
    theirs = someone_elses(sap)
    configure(stack, sap, code="NOISE", policy=f'existing_work = "{policy}"')
    await stack.start_daemon()
    await raise_and_clear(stack)
    await stack.settled()
    await stack.play("pump-1", [3.0] * 12)
    await stack.settled()
    assert len(sap.notifications) == 1, sap.notifications  # nothing created
    text = str(theirs["MaintNotificationLongText"])
    if policy == "link":
        assert "[PlantBridge link PB" in text and "Bearing wear on pump-1" in text
        assert "[PlantBridge clear PB" in text  # the clear went to the linked record
    else:
        assert text == ""  # skip writes nothing, neither on raise nor on clear
    assert theirs["NotifProcessingPhase"] == "1"  # someone else's: never completed by us


async def test_create_policy_makes_its_own_despite_open_work(
        stack: Stack, sap: SapPmSimulator) -> None:
    someone_elses(sap)
    configure(stack, sap, code="NOISE")
    await stack.start_daemon()
    await raise_and_clear(stack)
    await stack.settled()
    assert len(sap.notifications) == 2


# The kill -9 trials of this workflow (every upstream, every step): test_workflow_trials.py.
