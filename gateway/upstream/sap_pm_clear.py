"""The SAP PM clear: read the notification the raise made, note the malfunction end on it
once, and (by default) complete it; someone else's notification is noted, never completed."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway.model import Delivery, OutboxRecord, Outcome
from gateway.upstream.sap_odata import entity_of, odata_date, odata_string, odata_time
from gateway.upstream.sap_pm_base import DONE_PHASES, ENTITY_SET, SapPmBase
from gateway.upstream.sap_pm_config import OnClear
from gateway.upstream.sap_pm_texts import clear_note, link_marker, note_marker


class SapClearSteps(SapPmBase):
    """Part of `SapPmSink`: a status update (clear or incident update) on a notification."""

    async def _clear(self, rec: OutboxRecord) -> Delivery:
        number = rec.upstream_ref
        msg = rec.message
        if not number:
            return Delivery(rec.id, Outcome.REJECTED, reason=(
                "no upstream reference: the notification of episode "
                f"{msg.episode_id} was never created (its raise dead-lettered?), "
                "nothing to clear"))
        resource = f"{ENTITY_SET}({odata_string(number)})"
        answer = await self.client.read(resource, {
            "$select": "MaintenanceNotification,NotifProcessingPhase,MaintNotificationLongText,"
                       "MaintNotifExtReferenceNumber",
            "$format": "json"})
        if not answer.ok:
            return self._failure(rec.id, answer, f"read of notification {number}")
        current = entity_of(answer.body)
        if current is None:
            return Delivery(rec.id, Outcome.RETRY, reason=(
                f"read of notification {number}: unreadable body"))
        phase = str(current.get("NotifProcessingPhase") or "")
        # A note that the notification was completed while the condition is still active
        # (closed_upstream = "comment") is meant for a completed one: it is tried, and SAP
        # decides. NOCO makes a notification read-only [S]; SAP's refusal is a dead letter that
        # quotes SAP, the note kept in the outbox (never a reopening of the planner's decision).
        closed_note = bool(msg.body.get("closed_upstream"))
        if phase in DONE_PHASES and not closed_note:
            # completed meanwhile (by a planner, or by our lost answer)
            return Delivery(rec.id, Outcome.ACCEPTED, receipt=number)
        ours = str(current.get("MaintNotifExtReferenceNumber") or "") == msg.body.get("dedup_key")
        said = str(current.get("MaintNotificationLongText") or "")
        if not ours and link_marker(msg.body) not in said:  # skipped to it: we never wrote there
            return Delivery(rec.id, Outcome.ACCEPTED, receipt=number, reason=(
                f"notification {number} is someone else's and was not linked: left as it is"))
        update = bool(msg.body.get("update"))  # an incident update: a note, nothing else
        patch = {} if update else self._malfunction_end(msg.body)
        # A repeated clear (its answer was lost) finds its note already there: no second one.
        if note_marker(msg.body) not in said:
            patch["MaintNotifLongTextForEdit"] = clear_note(msg.body)
        if patch:
            etag = answer.etag or (current.get("__metadata") or {}).get("etag")
            answer = await self.client.write("PATCH", resource, payload=patch,
                                             headers={"If-Match": etag} if etag else None)
            if answer.status == 412:  # changed between our read and our write: read again
                return Delivery(rec.id, Outcome.RETRY, reason=(
                    f"notification {number} changed while we noted the clear (HTTP 412); "
                    "reading it again"))
            if not answer.ok:
                what = "closed-upstream note" if closed_note else "clear note"
                return self._failure(rec.id, answer, f"{what} on notification {number}")
        # a linked or skipped-to notification is someone else's: noted, never completed by us
        if self._cfg.on_clear is OnClear.COMPLETE and ours and not update:
            answer = await self.client.write(
                "POST", "CompleteMaintNotification",
                params={"MaintenanceNotification": odata_string(number)})
            if not answer.ok:
                return self._failure(rec.id, answer, f"completion of notification {number}")
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=number)

    def _malfunction_end(self, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            ended = datetime.fromisoformat(str(body["cleared_at"])).astimezone(self._zone)
        except (KeyError, ValueError):
            return {}
        return {"MalfunctionEndDate": odata_date(ended), "MalfunctionEndTime": odata_time(ended)}
