"""The SAP PM sink against the simulator: one notification per episode, whatever happens."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from gateway.messages import dedup_key
from gateway.model import Outcome
from gateway.upstream.rest import UpstreamCheckError
from simulators.sap_pm import SapPmSimulator
from tests.harness import wait_for
from tests.upstream.sap_pm.conftest import (
    RAISED_AT,
    SinkFactory,
    record,
    retried,
)

LOOKUP = ("GET", "MaintenanceNotification", 200)
CREATED = ("POST", "MaintenanceNotification", 201)


async def test_a_raise_creates_one_notification_with_the_mapped_fields(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    rec = record(title="{asset}: bearing vibration high on the drive end, check now")
    (d,) = await sink.send([rec])
    assert (d.outcome, d.receipt, d.record_id) == (Outcome.ACCEPTED, "10000020", rec.id)
    (n,) = sim.notifications
    assert n["NotificationText"] == "pump-1: bearing vibration high on the dr"  # 40 chars
    assert n["NotificationType"] == "M1"
    assert n["TechnicalObject"] == "000000000210100094"
    assert n["TechnicalObjectLabel"] == "210100094"
    assert n["TechObjIsEquipOrFuncnlLoc"] == "EAMS_EQUI"
    assert n["MaintPriority"] == "2"
    assert (n["MaintenancePlanningPlant"], n["MaintenancePlannerGroup"]) == ("1010", "920")
    assert (n["MainWorkCenter"], n["MainWorkCenterPlant"]) == ("RES-0100", "1010")
    raised = datetime.fromtimestamp(RAISED_AT, UTC)
    midnight = datetime(raised.year, raised.month, raised.day, tzinfo=UTC)
    assert n["MalfunctionStartDate"] == f"/Date({int(midnight.timestamp()) * 1000})/"
    assert n["MalfunctionStartTime"] == raised.strftime("PT%HH%MM%SS")
    assert n["MaintenanceObjectIsDown"] is False
    assert n["MaintNotifExtReferenceNumber"] == dedup_key("ep-1")
    text = n["MaintNotificationLongText"]
    assert text.startswith("Check bearing\n")
    for said in ("vibration 7.4 above 7.1 for 5 s", "vib-high", "ep-1", "site-a"):
        assert said in text
    # Looked up first, then created: one request each, and one token fetch.
    assert sim.received[LOOKUP] == 1
    assert sim.received[CREATED] == 1
    assert sink.client.token_fetches == 1


async def test_a_breakdown_is_a_malfunction_report_and_the_object_is_down(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url, priority_map={"1": "1", "2": "1", "3": "3", "4": "4"})
    (d,) = await sink.send([record(asset="line-1", breakdown=True, priority=2)])
    assert d.outcome is Outcome.ACCEPTED
    (n,) = sim.notifications
    assert (n["NotificationType"], n["MaintPriority"]) == ("M2", "1")
    assert n["MaintenanceObjectIsDown"] is True
    assert n["TechnicalObject"] == n["FunctionalLocation"] == "1010-CWS-WCS-CWCP1"


async def test_sending_the_same_raise_again_finds_it(sim: SapPmSimulator,
                                                     make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    rec = record()
    (first,) = await sink.send([rec])
    (again,) = await sink.send([retried(rec)])
    assert again.outcome is Outcome.ACCEPTED
    assert again.receipt == first.receipt
    assert "exists already as notification 10000020" in again.reason
    assert len(sim.notifications) == 1


async def test_dropped_answer_after_commit_then_retry_gives_exactly_one(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    rec = record()
    sim.faults.set("drop_after_commit", count=1)
    (lost,) = await sink.send([rec])
    assert lost.outcome is Outcome.RETRY
    assert "connection dropped" in lost.reason
    assert lost.retry_after_seconds == 120.0  # unclear: look again once SAP is surely done
    assert len(sim.notifications) == 1  # SAP has it; we did not hear
    (d,) = await sink.send([retried(rec)])
    assert (d.outcome, d.receipt) == (Outcome.ACCEPTED, "10000020")
    assert len(sim.notifications) == 1
    assert sim.received[CREATED] == 0  # the only create's answer was dropped
    assert sim.received[("POST", "MaintenanceNotification", 0)] == 1


async def test_timeout_while_sap_commits_late_then_retry_gives_exactly_one(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url, total_timeout_seconds=0.5, connect_timeout_seconds=0.5)
    rec = record()
    (d,) = await sink.send([rec])  # fetch a token while SAP is quick
    assert d.outcome is Outcome.ACCEPTED
    rec2 = record(episode="ep-2")
    # Only the create is slow: it times out on our side and commits on SAP's a bit later.
    sim.faults.set("slow", count=1, delay_seconds=1.0, methods=["POST"])
    (late,) = await sink.send([rec2])
    assert late.outcome is Outcome.RETRY
    assert "timed out" in late.reason and "may still commit" in late.reason
    assert late.retry_after_seconds == 120.0
    await wait_for(lambda: len(sim.notifications) == 2, 5, "the late create to commit")
    (d2,) = await sink.send([retried(rec2)])
    assert (d2.outcome, d2.receipt) == (Outcome.ACCEPTED, "10000021")
    assert len(sim.notifications) == 2


async def test_concurrent_sends_of_one_key_make_one_notification(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    rec = record()
    results = await asyncio.gather(*(sink.send([retried(rec)]) for _ in range(5)))
    receipts = {ds[0].receipt for ds in results}
    assert receipts == {"10000020"}
    assert len(sim.notifications) == 1


async def test_session_expiry_mid_run_refetches_and_delivers_once(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    (d1,) = await sink.send([record()])
    assert d1.outcome is Outcome.ACCEPTED
    sim.faults.set("expire_session", count=1)
    (d2,) = await sink.send([record(episode="ep-2")])
    assert (d2.outcome, d2.receipt) == (Outcome.ACCEPTED, "10000021")
    assert len(sim.notifications) == 2
    assert sim.received[("POST", "MaintenanceNotification", 403)] == 1
    assert sim.received[CREATED] == 2
    assert sink.client.token_fetches == 2


async def test_csrf_refused_twice_is_retried_not_dead_lettered(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    sim.faults.set("expire_session")  # every write: a load balancer losing the session
    (d,) = await sink.send([record()])
    assert d.outcome is Outcome.RETRY
    assert "CSRF token refused again" in d.reason
    assert sink.client.token_fetches == 2  # one refetch, not a loop
    assert sim.notifications == []


@pytest.mark.parametrize(("mode", "status"), [("error_5xx", 503), ("error_5xx", 500),
                                              ("rate_429", 429)])
async def test_5xx_and_429_are_retried_with_retry_after(
        sim: SapPmSimulator, make_sink: SinkFactory, mode: str, status: int) -> None:
    sink = make_sink(sim.url)
    sim.faults.set(mode, count=1, status=status, retry_after=7)
    (d,) = await sink.send([record()])
    assert d.outcome is Outcome.RETRY
    assert d.retry_after_seconds == 7.0
    assert f"HTTP {status}" in d.reason
    assert sim.notifications == []
    (d,) = await sink.send([record()])
    assert d.outcome is Outcome.ACCEPTED


async def test_unknown_asset_is_rejected_without_asking_sap(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    (d,) = await sink.send([record(asset="compressor-9")])
    assert d.outcome is Outcome.REJECTED
    assert "'compressor-9'" in d.reason and "asset_map" in d.reason
    assert sum(sim.received.values()) == 0


async def test_sap_validation_error_is_rejected_with_its_message(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    (d,) = await sink.send([record(asset="ghost-1")])
    assert d.outcome is Outcome.REJECTED
    assert "HTTP 400" in d.reason
    assert "Equipment 999999 does not exist [IS/003]" in d.reason
    assert sim.notifications == []


async def test_bad_credentials_are_rejected_and_check_says_so(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url, auth={"user": "PB_COMM", "password": {"value": "wrong"}})
    (d,) = await sink.send([record()])
    assert d.outcome is Outcome.REJECTED
    assert "credentials refused" in d.reason and "'PB_COMM'" in d.reason
    with pytest.raises(UpstreamCheckError, match="credentials refused"):
        await sink.check()
    await make_sink(sim.url).check()  # the right password passes


async def test_upstream_down_is_retried_and_delivered_when_back(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    await sim.go_down()
    (d,) = await sink.send([record()])
    assert d.outcome is Outcome.RETRY
    with pytest.raises(UpstreamCheckError):
        await sink.check()
    await sim.come_up()
    (d,) = await sink.send([record()])
    assert d.outcome is Outcome.ACCEPTED
    assert len(sim.notifications) == 1


async def test_duplicates_made_elsewhere_resolve_to_the_oldest(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    rec = record()
    made = {"NotificationText": "made by hand", "MaintNotifExtReferenceNumber": dedup_key("ep-1")}
    for _ in range(2):
        sim.store.create(made, "SOMEONE")
    sink = make_sink(sim.url)
    (d,) = await sink.send([rec])
    assert (d.outcome, d.receipt) == (Outcome.ACCEPTED, "10000020")
    assert "2 notifications carry it: 10000020, 10000021" in d.reason
    assert len(sim.notifications) == 2


async def test_a_504_on_create_is_unclear_but_a_refused_connection_is_not(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url, unclear_retry_after_seconds=30)
    sim.faults.set("error_5xx", count=1, status=504, retry_after=None, methods=["POST"])
    (d,) = await sink.send([record()])
    assert (d.outcome, d.retry_after_seconds) == (Outcome.RETRY, 30.0)
    assert "HTTP 504" in d.reason
    await sim.go_down()
    (d,) = await sink.send([record()])
    assert (d.outcome, d.retry_after_seconds) == (Outcome.RETRY, None)  # nothing was sent
