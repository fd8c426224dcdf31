"""Reading SAP PM notifications back for the status poll and reconciliation
(gateway/status_poll.py): by number or by external reference, mapped onto our states."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.status_poll import UpstreamReadError, UpstreamRecord, WorkState
from gateway.upstream.sap_odata import Answer, entity_of, odata_string, results_of
from gateway.upstream.sap_pm_base import ENTITY_SET, LINK_ERRORS, SapPmBase, link_failure


class SapReadBack(SapPmBase):
    """Part of `SapPmSink`: `read_record` and `records_by_reference`."""

    async def read_record(self, upstream_ref: str) -> UpstreamRecord | None:
        """Notification `upstream_ref` now; None when SAP no longer has it (404)."""
        answer = await self._read_back(f"{ENTITY_SET}({odata_string(upstream_ref)})",
                                       {"$select": READ_BACK_SELECT, "$format": "json"})
        if answer.status == 404:
            return None
        found = entity_of(answer.body)
        if not answer.ok or found is None:
            raise UpstreamReadError(self._read_failure(answer, f"notification {upstream_ref}"))
        return notification_record(found, upstream_ref)

    async def records_by_reference(self, external_ref: str) -> list[UpstreamRecord]:
        """Every notification whose MaintNotifExtReferenceNumber is `external_ref`."""
        answer = await self._read_back(ENTITY_SET, {
            "$filter": f"MaintNotifExtReferenceNumber eq {odata_string(external_ref)}",
            "$select": READ_BACK_SELECT, "$format": "json"})
        found = results_of(answer.body) if answer.ok else None
        if found is None:
            raise UpstreamReadError(self._read_failure(answer, f"lookup of {external_ref}"))
        return [notification_record(f, str(f["MaintenanceNotification"])) for f in found
                if f.get("MaintenanceNotification")]

    async def _read_back(self, resource: str, params: dict[str, str]) -> Answer:
        try:
            return await self.client.read(resource, params)
        except LINK_ERRORS as exc:
            raise UpstreamReadError(f"{self.name}: {link_failure(exc)}") from exc

    def _read_failure(self, answer: Answer, what: str) -> str:
        return f"{self.name}: {what}: {self._failure(0, answer, 'read').reason}"


# What a notification's status means to us. The system status (OSNO outstanding, NOPR in
# process, NOPO postponed, NOCO completed; help.sap.com "Process Notification" [S]) decides
# when it is there; else the phase, of which only 1 (outstanding) and 4/5 (completed/deleted)
# are documented: 2 and 3 are read as "not completed" (created) without the status text.
READ_BACK_SELECT = ("MaintenanceNotification,NotifProcessingPhase,"
                    "ConcatenatedActiveSystStsName,MaintNotifExtReferenceNumber")


def notification_record(doc: Mapping[str, Any], number: str) -> UpstreamRecord:
    phase = str(doc.get("NotifProcessingPhase") or "")
    status = str(doc.get("ConcatenatedActiveSystStsName") or "")
    words = set(status.upper().split())
    if "NOCO" in words or phase in ("4", "5"):
        state = WorkState.COMPLETED
    elif "NOPR" in words or (not words and phase == "3"):
        state = WorkState.IN_PROGRESS
    else:
        state = WorkState.CREATED
    raw = " ".join(x for x in (status, f"phase {phase}" if phase else "") if x)
    ref = doc.get("MaintNotifExtReferenceNumber")
    return UpstreamRecord(number, state, raw, str(ref) if ref else None)
