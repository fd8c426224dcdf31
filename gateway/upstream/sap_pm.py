"""SAP S/4HANA Plant Maintenance sink: maintenance notifications over API_MAINTNOTIFICATION.

SAP has no idempotency key, so duplicates are avoided here (UPSTREAM-APIS §1.5, §5 rule 5):
every notification carries `MaintNotifExtReferenceNumber = dedup_key`, and every attempt to
create one first looks that reference up, single-flight per key. A create whose outcome is
unclear (timeout, dropped connection, 504) is RETRY after `unclear_retry_after_seconds`, when SAP
is surely done with it; that attempt then finds it instead of creating it again. A clear notes
the malfunction end on the notification its raise created and (by default) completes it,
reading the notification first so that a repeated clear changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from gateway.model import Delivery, MessageKind, OutboxRecord, Outcome
from gateway.status_poll import UpstreamReadError, UpstreamRecord, WorkState
from gateway.upstream.lanes import send_in_episode_lanes
from gateway.upstream.limits import client_timeout
from gateway.upstream.oauth2 import OAuth2ClientCredentials, OAuth2Refused, OAuth2Unavailable
from gateway.upstream.rest import MAX_REASON, UpstreamCheckError, transport_reason
from gateway.upstream.retry_policy import classify_status, wait_for_interrupted_send
from gateway.upstream.sap_domains import sap_domain_problems
from gateway.upstream.sap_odata import (
    Answer,
    CsrfUnavailable,
    ODataClient,
    entity_of,
    error_text,
    odata_date,
    odata_string,
    odata_time,
    results_of,
)
from gateway.upstream.sap_parts import SapPartsSteps
from gateway.upstream.sap_pm_config import (
    NotificationTypes,
    OnClear,
    SapAssetRef,
    SapBasicAuth,
    SapPmSinkConfig,
    TechnicalObjectType,
)
from gateway.upstream.sap_pm_texts import (
    clear_note,
    link_marker,
    link_note,
    long_text,
    note_marker,
    short_text,
)
from gateway.workflow import PART_STEPS, ExistingWork, PartLine, policy_for

ENTITY_SET = "MaintenanceNotification"
MAX_EXT_REF = 20
# NotifProcessingPhase values that mean "completed or beyond" [U]: only "1" (outstanding) is
# confirmed by a vendor sample; "4" is completed in the standard phase domain as we know it.
DONE_PHASES = frozenset({"4", "5"})
# Open work made by someone else: phases "1" outstanding [T], "2" postponed and "3" in process
# (both unverified; the shared doc's recommended `lt '4'`, spelled as the equalities it means).
OPEN_PHASES = ("1", "2", "3")
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
UNCLEAR_STATUSES = frozenset({504})  # a proxy gave up; the backend may still commit

__all__ = ["NotificationTypes", "OnClear", "SapAssetRef", "SapBasicAuth", "SapPmSink",
           "SapPmSinkConfig", "TechnicalObjectType"]


class SapPmSink:
    """Implements `gateway.model.Sink` for SAP PM. Receipt: the notification number."""

    def __init__(self, cfg: SapPmSinkConfig, authorization: str | None) -> None:
        """`authorization`: the Basic header value; None with OAuth2 (`cfg.auth`)."""
        self.name = cfg.name
        self._cfg = cfg
        self.config = cfg
        self._zone = ZoneInfo(cfg.malfunction_timezone)
        timeout = client_timeout(cfg.connect_timeout_seconds, cfg.first_byte_timeout_seconds,
                                 cfg.total_timeout_seconds)
        self.limits = cfg.limits
        self.first_byte_timeout_seconds = min(cfg.first_byte_timeout_seconds,
                                              cfg.total_timeout_seconds)
        self.client = ODataClient(cfg.service_url, cfg.sap_client, authorization=authorization,
                                  ssl_context=cfg.tls.for_url(cfg.base_url), timeout=timeout,
                                  connection_limit=max(cfg.concurrent_requests,
                                                       cfg.limits.max_in_flight),
                                  oauth2=_oauth2(cfg))
        self._authorization = authorization
        self._services: dict[str, ODataClient] = {}  # other services of the system, by path
        self._flights: dict[str, tuple[asyncio.Lock, int]] = {}  # key -> (lock, users)
        self._parts = SapPartsSteps(self)

    def parts_for(self, asset: str, failure_code: str) -> Sequence[PartLine]:
        """The spare parts a raise of `failure_code` on `asset` needs (the registry's list):
        after its notification exists, gateway/workflow.py chains the parts steps."""
        return tuple(self._cfg.spare_parts.get(asset, {}).get(failure_code, ()))

    async def aclose(self) -> None:
        await self.client.aclose()
        for other in self._services.values():
            await other.aclose()

    def service_client(self, service_path: str) -> ODataClient:
        """A client of another OData service of the same system and client (API_EQUIPMENT,
        API_FUNCTIONALLOCATION) with the same credentials and the same OAuth2 token."""
        client = self._services.get(service_path)
        if client is None:
            cfg = self._cfg
            client = ODataClient(
                cfg.base_url.rstrip("/") + service_path, cfg.sap_client,
                authorization=self._authorization, ssl_context=cfg.tls.for_url(cfg.base_url),
                timeout=aiohttp.ClientTimeout(total=cfg.total_timeout_seconds,
                                              sock_connect=cfg.connect_timeout_seconds),
                connection_limit=cfg.concurrent_requests)
            client.bearer = self.client.bearer  # one token for the whole system
            self._services[service_path] = client
        return client

    async def check(self) -> None:
        """Reachable, credentials accepted, a CSRF token issued."""
        try:
            answer = await self.client.fetch_token()
        except (CsrfUnavailable, OAuth2Unavailable) as exc:
            raise UpstreamCheckError(f"{self.name}: {exc}") from exc
        except OAuth2Refused as exc:
            raise UpstreamCheckError(f"{self.name}: {oauth2_refused(exc)}") from exc
        except TRANSPORT_ERRORS as exc:
            raise UpstreamCheckError(f"{self.name}: {transport_reason(exc)}") from exc
        if not answer.ok:
            raise UpstreamCheckError(f"{self.name}: {self._failure(0, answer, 'token').reason}")

    async def send(self, batch: Sequence[OutboxRecord]) -> Sequence[Delivery]:
        """One Delivery per record. Per asset in order; after a RETRY the later records of that
        asset wait too (a clear never overtakes its raise). Assets go concurrently."""
        return await send_in_episode_lanes(batch, self.send_one, self._cfg.concurrent_requests)

    async def send_one(self, rec: OutboxRecord) -> Delivery:
        kind = rec.message.kind
        try:
            if kind is MessageKind.MAINTENANCE_REQUEST:
                return await self._raise(rec)
            if kind is MessageKind.STATUS_UPDATE:
                return await self._clear(rec)
            if kind in PART_STEPS:
                return await self._parts.send(rec)
        except (CsrfUnavailable, OAuth2Unavailable) as exc:
            return Delivery(rec.id, Outcome.RETRY, reason=str(exc))
        except OAuth2Refused as exc:  # a configuration fault: loud, and no retrying it
            return Delivery(rec.id, Outcome.REJECTED, reason=oauth2_refused(exc))
        except TRANSPORT_ERRORS as exc:
            return Delivery(rec.id, Outcome.RETRY, reason=transport_reason(exc))
        return Delivery(rec.id, Outcome.REJECTED, reason=f"unsupported message kind {kind}")

    # --- raise: look up, then create --------------------------------------------------------

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

    # --- clear: note, then complete -------------------------------------------------------

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

    # --- failures ---------------------------------------------------------------------------

    def failure(self, record_id: int, answer: Answer, what: str) -> Delivery:
        """A non-2xx answer as a Delivery (for the parts steps, gateway/upstream/sap_parts.py)."""
        return self._failure(record_id, answer, what)

    def _failure(self, record_id: int, answer: Answer, what: str) -> Delivery:
        """A non-2xx answer as a Delivery; the OData error message is quoted in the reason."""
        said = error_text(answer)
        if answer.status == 401 and isinstance(self._cfg.auth, OAuth2ClientCredentials):
            return Delivery(record_id, Outcome.REJECTED, reason=(
                f"{what}: SAP refused the OAuth2 token: check client id/secret and that OAuth "
                "is enabled for the service (HTTP 401 even with a fresh token)"))
        if answer.status == 401 and isinstance(self._cfg.auth, SapBasicAuth):
            return Delivery(record_id, Outcome.REJECTED, reason=(
                f"{what}: credentials refused (HTTP 401) for user {self._cfg.auth.user!r} in "
                f"client {self._cfg.sap_client}; check auth.user / auth.password"))
        if answer.csrf_refused:  # still refused right after a fresh token
            return Delivery(record_id, Outcome.RETRY, reason=(
                f"{what}: CSRF token refused again right after a fresh fetch (session cookie "
                "lost? a load balancer without sticky sessions?)"))
        v = classify_status(answer.status, said, answer.retry_after)
        return Delivery(record_id, v.outcome, reason=f"{what}: {v.reason}"[:MAX_REASON],
                        retry_after_seconds=v.retry_after_seconds)


    # --- check --online: the priority and failure-code domains (gateway/registry_online.py)

    async def domain_problems(self, *, priorities: Collection[int],
                              failure_codes: Collection[str]) -> list[str]:
        """Which of the rules' canonical priorities and failure codes SAP does not know, in
        plain words ([] when all are known); see gateway/upstream/sap_domains.py."""
        return await sap_domain_problems(self, self._cfg, priorities=priorities,
                                         failure_codes=failure_codes)

    # --- reading back: status polling and reconciliation (gateway/status_poll.py) ---------

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
        except (CsrfUnavailable, OAuth2Unavailable) as exc:
            raise UpstreamReadError(f"{self.name}: {exc}") from exc
        except OAuth2Refused as exc:
            raise UpstreamReadError(f"{self.name}: {oauth2_refused(exc)}") from exc
        except TRANSPORT_ERRORS as exc:
            raise UpstreamReadError(f"{self.name}: {transport_reason(exc)}") from exc

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


def _oauth2(cfg: SapPmSinkConfig) -> tuple[OAuth2ClientCredentials, str] | None:
    if isinstance(cfg.auth, OAuth2ClientCredentials) and cfg.token_url is not None:
        return cfg.auth, cfg.token_url
    return None


def oauth2_refused(exc: OAuth2Refused) -> str:
    return f"SAP refused the OAuth2 token: check client id/secret ({exc})"
