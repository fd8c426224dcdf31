"""A clear notes the end of the malfunction on the notification its raise created and completes
it; repeating a clear (its answer was lost) changes nothing more."""

from __future__ import annotations

from dataclasses import replace

from gateway.messages import dedup_key
from gateway.model import OutboxRecord, Outcome
from simulators.sap_pm import SapPmSimulator
from simulators.sap_pm.notifications import Notification
from tests.upstream.sap_pm.conftest import SinkFactory, clear_record, record, retried

COMPLETE = ("POST", "CompleteMaintNotification", 200)
PATCHED = ("PATCH", "MaintenanceNotification(key)", 204)


async def test_a_clear_completes_the_notification_the_raise_created(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    (raised,) = await sink.send([record()])
    assert raised.receipt is not None
    (d,) = await sink.send([clear_record(raised.receipt)])
    assert (d.outcome, d.receipt) == (Outcome.ACCEPTED, raised.receipt)
    (n,) = sim.notifications
    assert n["NotifProcessingPhase"] == "4"
    assert n["NotificationCompletionDate"].startswith("/Date(")
    assert n["MalfunctionEndDate"].startswith("/Date(")
    assert n["MalfunctionEndTime"] != "PT00H00M00S"
    assert f"[PlantBridge clear {dedup_key('ep-1')}] condition cleared" in \
        n["MaintNotificationLongText"]
    assert n["MaintNotificationLongText"].startswith("Check bearing")  # evidence kept
    assert (sim.received[PATCHED], sim.received[COMPLETE]) == (1, 1)


async def test_a_repeated_clear_changes_nothing_more(sim: SapPmSimulator,
                                                     make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    (raised,) = await sink.send([record()])
    assert raised.receipt is not None
    clear = clear_record(raised.receipt)
    sim.faults.set("drop_after_commit", count=1)  # the PATCH commits, its answer is lost
    (lost,) = await sink.send([clear])
    assert lost.outcome is Outcome.RETRY
    (d,) = await sink.send([retried(clear)])
    assert d.outcome is Outcome.ACCEPTED
    (again,) = await sink.send([retried(clear)])
    assert again.outcome is Outcome.ACCEPTED
    (n,) = sim.notifications
    assert n["MaintNotificationLongText"].count("[PlantBridge clear") == 1
    assert n["NotifProcessingPhase"] == "4"
    assert sim.received[COMPLETE] == 1


async def test_note_only_leaves_completion_to_the_planner(sim: SapPmSimulator,
                                                          make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url, on_clear="note_only")
    (raised,) = await sink.send([record()])
    assert raised.receipt is not None
    (d,) = await sink.send([clear_record(raised.receipt)])
    assert d.outcome is Outcome.ACCEPTED
    (n,) = sim.notifications
    assert n["NotifProcessingPhase"] == "1"
    assert "[PlantBridge clear" in n["MaintNotificationLongText"]
    assert sim.received[COMPLETE] == 0


async def test_raise_and_clear_in_one_batch_keep_their_order(sim: SapPmSimulator,
                                                             make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    sim.faults.set("error_5xx", count=1)  # the raise's lookup fails
    raise_rec, clear = record(), clear_record("10000020")
    d_raise, d_clear = await sink.send([raise_rec, clear])
    assert d_raise.outcome is d_clear.outcome is Outcome.RETRY
    assert "held: earlier record" in d_clear.reason
    assert sum(n for (m, r, _), n in sim.received.items() if r != "MaintenanceNotification") == 0


async def test_a_clear_without_a_receipt_is_rejected(sim: SapPmSimulator,
                                                     make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    (d,) = await sink.send([clear_record(None)])
    assert d.outcome is Outcome.REJECTED
    assert "no upstream reference" in d.reason and "ep-1" in d.reason
    assert sum(sim.received.values()) == 0


async def test_a_clear_of_a_missing_notification_quotes_sap(sim: SapPmSimulator,
                                                            make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    (d,) = await sink.send([clear_record("99999999")])
    assert d.outcome is Outcome.REJECTED
    assert "HTTP 404" in d.reason and "99999999 does not exist" in d.reason


async def test_a_clear_of_a_completed_notification_is_accepted_untouched(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    (raised,) = await sink.send([record()])
    assert raised.receipt is not None
    sim.store.set_phase(sim.store.get(raised.receipt), "4")  # a planner closed it already
    (d,) = await sink.send([clear_record(raised.receipt)])
    assert d.outcome is Outcome.ACCEPTED
    assert (sim.received[PATCHED], sim.received[COMPLETE]) == (0, 0)


async def test_the_note_carries_if_match_and_a_race_is_read_again(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sim.require_if_match = True  # [U] whether S/4HANA enforces it: we cope either way
    sink = make_sink(sim.url)
    (raised,) = await sink.send([record()])
    assert raised.receipt is not None
    real_get = sim.store.get
    reads = 0

    def planner_edits_meanwhile(number: str) -> Notification:
        nonlocal reads
        item = real_get(number)
        reads += 1
        if reads == 2:  # between the sink's read and its PATCH
            sim.store.update(item, {"NotificationText": "edited by a planner"})
        return item

    sim.store.get = planner_edits_meanwhile  # type: ignore[method-assign]
    clear = clear_record(raised.receipt)
    (d,) = await sink.send([clear])
    assert d.outcome is Outcome.RETRY
    assert "HTTP 412" in d.reason
    (d,) = await sink.send([retried(clear)])
    assert d.outcome is Outcome.ACCEPTED
    (n,) = sim.notifications
    assert n["NotificationText"] == "edited by a planner"
    assert n["NotifProcessingPhase"] == "4"
    assert sim.received[("PATCH", "MaintenanceNotification(key)", 412)] == 1
    assert sim.received[("PATCH", "MaintenanceNotification(key)", 428)] == 0


def _update(rec: OutboxRecord, at: str) -> OutboxRecord:
    """An incident update (roll-up, gateway/rollup.py): a status update that is no clear."""
    return replace(rec, message=replace(rec.message, body={
        **rec.message.body, "status": "in_progress", "update": True, "updated_at": at,
        "reason": "incident update 2: 2 more, 0 cleared", "note": "pump-7: vibration 9"}))


async def test_an_incident_update_is_a_note_and_never_completes(
        sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    (raised,) = await sink.send([record()])
    assert raised.receipt is not None
    for at in ("2026-12-05T00:00:00Z", "2026-12-05T00:01:00Z", "2026-12-05T00:01:00Z"):
        (d,) = await sink.send([_update(clear_record(raised.receipt), at)])
        assert d.outcome is Outcome.ACCEPTED, d.reason
    (n,) = sim.notifications
    assert n["NotifProcessingPhase"] != "4" and sim.received[COMPLETE] == 0
    text = n["MaintNotificationLongText"]
    assert text.count("pump-7: vibration 9") == 2  # one note per update, a repeat adds none
    assert "condition cleared" not in text
