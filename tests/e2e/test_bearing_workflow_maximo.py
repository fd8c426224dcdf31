"""The bearing-failure workflow end to end against Maximo: MQTT in, the real daemon, the Maximo
simulator as upstream, counting what it was asked to create.

Vibration on pump-1 raises a rule with failure code BEARING; the asset registry maps pump-1 to
Maximo asset PUMP-1 at BEDFORD and lists two parts for BEARING. Expected: one SR, one
reservation (INVRESERVE) per part in the mapped storeroom, one purchase requisition for the part
below its reorder level, and exactly that after a kill -9 of the daemon process in the middle of
it. An open work order with the same failure code under `existing_work = "link"` is used
instead: nothing is created, our evidence is a work-log note, the reservations name the WO, and
the status poll shows the WO's status.

Assumed facts (UPSTREAM-WORKFLOW-APIS §3): INVRESERVE.requestnum and PR.externalrefid are
settable and filterable [U]; MXAPIPR exists [T].
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.trace import as_dict
from simulators.maximo import MaximoSimulator
from tests.e2e.stack import Stack
from tests.e2e.test_bearing_workflow import ASSETS as SAP_ASSETS
from tests.e2e.test_bearing_workflow import RULE as SAP_RULE
from tests.harness import free_port, wait_for

# The SAP scenario's registry entry and rule (tests/e2e/test_bearing_workflow.py), with the
# asset's Maximo identity instead of its SAP one and the failure code fixed.
ASSETS = SAP_ASSETS.replace('sap = { equipment = "4711", planning_plant = "1010" }',
                            'maximo = { assetnum = "PUMP-1", siteid = "BEDFORD" }')
RULE = SAP_RULE.replace('"{code}"', '"BEARING"')


def configure(stack: Stack, sim: MaximoSimulator, *, policy: str = "",
              http_port: int = 0) -> None:
    (stack.tmp / "assets.toml").write_text(ASSETS)
    upstream = f"""
[[upstreams]]
type = "maximo"
name = "maximo"
base_url = "{sim.url}"
auth = {{ kind = "api_key", key = {{ value = "test-key" }} }}
siteid = "BEDFORD"
total_timeout_seconds = 5
unclear_retry_after_seconds = 1
status_poll_seconds = 0.3
[upstreams.parts]
storerooms = {{ "0001" = "CENTRAL" }}
"""
    path = stack.write_config(RULE.format(policy=policy), upstream=upstream,
                              http_port=http_port)
    path.write_text(path.read_text().replace('site = "e2e"',
                                             'site = "e2e"\nassets_file = "assets.toml"', 1))


@pytest.fixture
async def maximo() -> AsyncIterator[MaximoSimulator]:
    sim = MaximoSimulator(assets={"PUMP-1": "BEDFORD"})
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def created(sim: MaximoSimulator) -> dict[str, int]:
    """What the simulator was asked to create and did (201s), per object structure."""
    return {os: sim.count("POST", f"/os/{os}", 201)
            for os in ("mxapisr", "mxapiwodetail", "mxapiinvres", "mxapipr")}


def low_stock(sim: MaximoSimulator) -> None:
    sim.set_stock("BRG-6205", "CENTRAL", "BEDFORD", 3)  # below its reorder level 4
    sim.set_stock("SEAL-40", "CENTRAL", "BEDFORD", 5)


async def test_bearing_failure_makes_sr_reservations_and_requisition_once_despite_kill_9(
        stack: Stack, maximo: MaximoSimulator) -> None:
    low_stock(maximo)
    port = free_port()
    configure(stack, maximo, http_port=port)
    stack.spawn_daemon()
    await stack.wait_subprocess_up(port)
    await stack.play("pump-1", [3.0] * 2 + [8.0] * 12)
    await wait_for(lambda: len(maximo.tickets) == 1, 20, "the SR made")
    stack.power_cut()  # somewhere in the parts chain (or before it): every step exactly once
    stack.spawn_daemon()
    await stack.wait_subprocess_up(port)
    await wait_for(lambda: len(maximo.requisitions) == 1 and len(maximo.reservations) == 2,
                   30, "reservations and requisition made")
    await stack.play("pump-1", [3.0] * 12)
    await wait_for(lambda: maximo.tickets[0]["status"] == "RESOLVED", 20, "the clear resolved it")
    await stack.wait_drained(port)

    assert created(maximo) == {"mxapisr": 1, "mxapiwodetail": 0, "mxapiinvres": 2,
                               "mxapipr": 1}
    [sr] = maximo.tickets
    key = sr["externalrecid"]
    assert sr["assetnum"] == "PUMP-1" and sr["siteid"] == "BEDFORD"
    assert sorted((r["itemnum"], r["reservedqty"], r["location"], r["requestnum"])
                  for r in maximo.reservations) == [("BRG-6205", 2.0, "CENTRAL", key),
                                                    ("SEAL-40", 1.0, "CENTRAL", key)]
    [pr] = maximo.requisitions
    assert pr["externalrefid"] == key and sr["ticketid"] in pr["description"]
    assert [(ln["itemnum"], ln["orderqty"]) for ln in pr["prline"]] == [("BRG-6205", 3.0)]
    st = await stack.status_now(port)
    assert not any((st["outbox"].get("dead") or {}).values()), st["outbox"]


async def test_open_work_order_is_linked_nothing_created_and_its_status_shown(
        stack: Stack, maximo: MaximoSimulator) -> None:
    low_stock(maximo)
    wo = maximo.plant_work_order("PUMP-1", status="APPR", failurecode="BEARING")
    maximo.plant_work_order("PUMP-1", status="WAPPR", failurecode="ELEC")  # other work
    configure(stack, maximo, policy='existing_work = "link"')
    d = await stack.start_daemon()
    await stack.play("pump-1", [3.0] * 2 + [8.0] * 12)
    await wait_for(lambda: len(maximo.reservations) == 2 and len(maximo.requisitions) == 1,
                   20, "parts reserved against the work order")
    assert maximo.tickets == [] and created(maximo)["mxapisr"] == 0
    assert {r["wonum"] for r in maximo.reservations} == {wo["wonum"]}
    assert [w["description"].split(" (")[0] for w in wo["worklog"]] == ["PlantBridge evidence"]
    receipt = f"WO:{wo['wonum']}"

    def states() -> list[str]:
        recs: list[dict[str, Any]] = d.snapshot()["upstream_status"]["records"]
        return [h["state"] for r in recs if r["receipt"] == receipt for h in r["history"]]

    await wait_for(lambda: states() == ["created"], 20, "the WO seen as created")
    maximo.set_wo_status(wo["wonum"], "INPRG")
    await wait_for(lambda: states() == ["created", "in_progress"], 20, "the WO seen in progress")
    await stack.play("pump-1", [3.0] * 12)
    await wait_for(lambda: len(wo["worklog"]) == 2, 20, "the clear noted on the WO")
    await stack.settled()
    assert wo["status"] == "INPRG"  # someone else's work order: never completed by us
    assert created(maximo) == {"mxapisr": 0, "mxapiwodetail": 0, "mxapiinvres": 2,
                               "mxapipr": 1}
    # `trace` tells the episode: the WO as its request, each parts step with its own id
    assert d.outbox is not None
    found = await d.outbox.trace(maximo.reservations[0]["requestnum"])
    assert found is not None
    steps = {m["kind"]: m for m in as_dict(found)["messages"]}
    assert steps["maintenance_request"]["receipt"] == receipt
    assert steps["status_update"]["receipt"] == receipt
    assert steps["parts_stock"]["receipt"] == ('{"BRG-6205@1010/0001":3.0,'
                                               '"SEAL-40@1010/0001":5.0}')
    assert steps["parts_reservation"]["receipt"] == ",".join(
        r["invreserveid"] for r in maximo.reservations)
    assert steps["parts_requisition"]["receipt"] == maximo.requisitions[0]["prnum"]


async def test_a_dead_parts_step_blocks_nothing(stack: Stack, maximo: MaximoSimulator) -> None:
    maximo.set_stock("BRG-6205", "CENTRAL", "BEDFORD", 9)  # SEAL-40 is not stocked there
    configure(stack, maximo)
    d = await stack.start_daemon()
    await stack.play("pump-1", [3.0] * 2 + [8.0] * 12)
    await wait_for(lambda: any(x["kind"] == "parts_reservation"
                               for x in d.snapshot()["dead_letters"]), 20,
                   "the reservation dead-lettered")
    await stack.play("pump-1", [3.0] * 12)  # the clear still goes out
    await wait_for(lambda: maximo.tickets[0]["status"] == "RESOLVED", 20, "the clear resolved it")
    [dead] = [x for x in d.snapshot()["dead_letters"] if x["kind"] == "parts_reservation"]
    assert "SEAL-40" in dead["reason"] and "not stocked" in dead["reason"]
    assert maximo.requisitions == [] and len(maximo.tickets) == 1
    # the part that could be reserved was; a requeue after stocking adds only the seal
    assert [r["itemnum"] for r in maximo.reservations] == ["BRG-6205"]
