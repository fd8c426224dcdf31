"""The SAP PM raise: look the dedup key up, single-flight per key, then (under `link`/`skip`)
look for open work someone else made on the object, and only then create the notification.
A create whose outcome is unclear is retried only after SAP is surely done with it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import aiohttp

from gateway.model import Delivery, OutboxRecord, Outcome
from gateway.upstream.rest import transport_reason
from gateway.upstream.retry_policy import wait_for_interrupted_send
from gateway.upstream.sap_odata import (
    CsrfUnavailable,
    entity_of,
    error_text,
    odata_date,
    odata_string,
    odata_time,
    results_of,
)
from gateway.upstream.sap_pm_base import (
    ENTITY_SET,
    MAX_EXT_REF,
    OPEN_PHASES,
    TRANSPORT_ERRORS,
    UNCLEAR_STATUSES,
    SapPmBase,
)
from gateway.upstream.sap_pm_texts import link_marker, link_note, long_text, short_text
from gateway.workflow import ExistingWork, policy_for


class SapRaiseSteps(SapPmBase):
    """Part of `SapPmSink`: a maintenance request becomes one notification, made once."""

    async def _raise(self, rec: OutboxRecord) -> Delivery:
        body = rec.message.body
        key = str(body.get("dedup_key") or "")
        if not key or len(key) > MAX_EXT_REF:
            return Delivery(rec.id, Outcome.REJECTED, reason=(
                f"dedup_key {key!r} is not 1..{MAX_EXT_REF} characters "
                "(MaintNotifExtReferenceNumber)"))
        payload = self.notification(body)
        if isinstance(payload, str):
            return Delivery(rec.id, Outcome.REJECTED, reason=payload)
        held = wait_for_interrupted_send(rec, self._cfg.unclear_retry_after_seconds, time.time())
        if held is not None:
            return held
        async with self._single_flight(key):
            found = await self._lookup(rec.id, key)
            if found is None:
                found = await self._existing_work(rec, payload)
            if found is not None:
                return found
            try:
                answer = await self.client.write("POST", ENTITY_SET, payload=payload)
            except (aiohttp.ClientConnectorError, CsrfUnavailable):
                raise  # nothing was sent: a plain retry
            except TRANSPORT_ERRORS as exc:
                return self._unclear(rec.id, key, transport_reason(exc))
        if answer.status in UNCLEAR_STATUSES:
            return self._unclear(rec.id, key, f"create: HTTP {answer.status} "
                                 f"{error_text(answer)}".rstrip())
        if not answer.ok:
            return self._failure(rec.id, answer, "create")
        number = (entity_of(answer.body) or {}).get("MaintenanceNotification")
        if not isinstance(number, str) or not number:
            return Delivery(rec.id, Outcome.RETRY, reason=(
                f"create answered HTTP {answer.status} without a MaintenanceNotification; "
                f"the next attempt looks {key} up before creating again"))
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=number)

    def _unclear(self, record_id: int, key: str, said: str) -> Delivery:
        """The create may have been committed, or may still be: look again only after SAP
        is surely done with it (persisted by the outbox as the next attempt time)."""
        wait = self._cfg.unclear_retry_after_seconds
        return Delivery(record_id, Outcome.RETRY, retry_after_seconds=wait, reason=(
            f"{said}; the create may still commit: looking {key} up again in {wait:g} s "
            "before any new create"))

    @contextlib.asynccontextmanager
    async def _single_flight(self, key: str) -> AsyncIterator[None]:
        """One lookup-then-create per dedup_key at a time (a second one waits, then finds)."""
        lock, users = self._flights.get(key, (asyncio.Lock(), 0))
        self._flights[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._flights[key]
            if users <= 1:
                del self._flights[key]
            else:
                self._flights[key] = (lock, users - 1)

    async def _lookup(self, record_id: int, key: str) -> Delivery | None:
        """ACCEPTED with the notification already carrying `key`, None if there is none."""
        answer = await self.client.read(ENTITY_SET, {
            "$filter": f"MaintNotifExtReferenceNumber eq {odata_string(key)}",
            "$select": "MaintenanceNotification,NotifProcessingPhase",
            "$format": "json"})
        if not answer.ok:
            return self._failure(record_id, answer, f"lookup of {key}")
        found = results_of(answer.body)
        if found is None:
            return Delivery(record_id, Outcome.RETRY, reason=(
                f"lookup of {key}: HTTP {answer.status} with an unreadable body; "
                "not creating blind"))
        numbers = sorted(str(n) for n in (f.get("MaintenanceNotification") for f in found) if n)
        if not numbers:
            return None
        said = f"{key} exists already as notification {numbers[0]} (made by an earlier attempt)"
        if len(numbers) > 1:
            said += f"; {len(numbers)} notifications carry it: {', '.join(numbers)}"
        return Delivery(record_id, Outcome.ACCEPTED, receipt=numbers[0], reason=said)

    async def _existing_work(self, rec: OutboxRecord, payload: Mapping[str, Any]
                             ) -> Delivery | None:
        """Under `link` or `skip`: ACCEPTED with an open notification on the same technical
        object that someone else made (linked: our evidence added to its long text); None
        under `create` or when there is none. Runs after our own reference was not found."""
        body = rec.message.body
        policy = policy_for(body, self._cfg.existing_work_rules, self._cfg.existing_work)
        if policy is ExistingWork.CREATE:
            return None
        phases = " or ".join(f"NotifProcessingPhase eq '{p}'" for p in OPEN_PHASES)
        label = odata_string(str(payload["TechnicalObject"]))
        answer = await self.client.read(ENTITY_SET, {
            "$filter": f"TechnicalObjectLabel eq {label} and ({phases})",
            "$select": "MaintenanceNotification,MaintNotifExtReferenceNumber,"
                       "MaintNotificationLongText",
            "$format": "json"})
        if not answer.ok:
            return self._failure(rec.id, answer, "look-up of open notifications")
        found = results_of(answer.body)
        if found is None:
            return Delivery(rec.id, Outcome.RETRY, reason=(
                "look-up of open notifications: unreadable body; not creating blind"))
        open_ones = sorted((f for f in found if f.get("MaintenanceNotification")),
                           key=lambda f: str(f["MaintenanceNotification"]).zfill(12))
        if not open_ones:
            return None
        first = open_ones[0]
        number = str(first["MaintenanceNotification"])
        if policy is ExistingWork.SKIP:
            return Delivery(rec.id, Outcome.ACCEPTED, receipt=number, reason=(
                f"skipped: notification {number} is open on this object already"))
        if link_marker(body) not in str(first.get("MaintNotificationLongText") or ""):
            resource = f"{ENTITY_SET}({odata_string(number)})"
            answer = await self.client.write("PATCH", resource,
                                             payload={"MaintNotifLongTextForEdit": link_note(body)})
            if not answer.ok:
                return self._failure(rec.id, answer, f"link note on notification {number}")
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=number, reason=(
            f"linked: evidence noted on open notification {number}"))

    def notification(self, body: Mapping[str, Any]) -> dict[str, Any] | str:
        """The create payload for a canonical raise, or the plain reason it cannot be made."""
        asset = str(body.get("asset", ""))
        ref = self._cfg.asset_map.get(asset)
        if ref is None:
            return (f"asset {asset!r} has no SAP technical object in asset_map of upstream "
                    f"{self.name!r}; add it there or in the asset registry "
                    "(sap = { equipment = \"...\" })")
        priority = body.get("priority", body.get("severity"))
        sap_priority = self._cfg.priority_map.get(priority) if isinstance(priority, int) else None
        if sap_priority is None:
            return f"priority {priority!r} is not one of the canonical priorities 1..4"
        try:
            raised = datetime.fromisoformat(str(body["raised_at"])).astimezone(self._zone)
        except (KeyError, ValueError) as exc:
            return f"raised_at missing or not an ISO time: {exc}"
        breakdown = bool(body.get("breakdown", False))
        types = self._cfg.notification_types
        payload: dict[str, Any] = {
            "NotificationText": short_text(body),
            "NotificationType": types.malfunction if breakdown else types.request,
            "TechnicalObject": ref.technical_object,
            "TechObjIsEquipOrFuncnlLoc": str(ref.object_type),
            "MaintPriority": sap_priority,
            "MalfunctionStartDate": odata_date(raised),
            "MalfunctionStartTime": odata_time(raised),
            "MaintenanceObjectIsDown": breakdown,
            "MaintNotifLongTextForEdit": long_text(body),
            "MaintNotifExtReferenceNumber": str(body["dedup_key"]),
        }
        optional = {
            "MaintenancePlanningPlant": ref.planning_plant,
            "MaintenancePlannerGroup": ref.planner_group,
            "MainWorkCenter": ref.work_center,
            "MainWorkCenterPlant": ((ref.work_center_plant or ref.planning_plant)
                                    if ref.work_center else ""),
            "ReportedByUser": self._cfg.reported_by_user,
            "MaintNotifDetectionCodeGroup": self._cfg.detection_code_group,
            "MaintNotifDetectionCode": self._cfg.detection_code,
        }
        return payload | {k: v for k, v in optional.items() if v}
