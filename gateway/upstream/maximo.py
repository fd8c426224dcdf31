"""IBM Maximo Manage sink: service requests through the REST/JSON ("OSLC") API, `mxapisr`.

Maximo has no idempotency key, so duplicates are avoided here: every SR carries
`externalrecid = dedup_key` (20 characters at most), and every create is preceded, under a
single-flight lock per dedup key, by a lookup
`GET /os/mxapisr?lean=1&oslc.where=externalrecid="<key>" and siteid="<site>"`. An unclear
outcome (timeout, dropped connection, 5xx) is RETRY; the next attempt looks up first, so a
create that was committed but whose answer was lost is found instead of made twice.

Receipt: the SR's `ticketid` (the number people see and quote). A clear finds the SR again by
`ticketid` and `externalrecid`, takes its `href` and `_rowstamp`, and PATCHes it
(`POST <href>` + `x-method-override: PATCH` + `patchtype: MERGE`) to RESOLVED, or adds a work
log note. A stale rowstamp (412 BMXAA8229W) is refetched and retried once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from gateway.model import Delivery, MessageKind, OutboxRecord, Outcome
from gateway.status_poll import UpstreamReadError, UpstreamRecord, WorkState
from gateway.upstream.lanes import send_in_episode_lanes
from gateway.upstream.maximo_config import (
    ClearAction,
    MaximoApiKeyAuth,
    MaximoAssetRef,
    MaximoAuth,
    MaximoMaxauthAuth,
    MaximoSinkConfig,
    OptimisticLock,
    UnknownAssetPolicy,
)
from gateway.upstream.maximo_http import Answer, MaximoHttp
from gateway.upstream.maximo_wire import (
    MAX_REASON,
    NotRenderable,
    dedup_key_of,
    json_object,
    link_entry,
    link_marker,
    maximo_error,
    members,
    sr_body,
    where_literal,
    worklog_entry,
    worklog_marker,
)
from gateway.upstream.rest import UpstreamCheckError, transport_reason
from gateway.upstream.retry_policy import classify_status, wait_for_interrupted_send
from gateway.workflow import ExistingWork, policy_for

__all__ = [  # the config lives beside the sink; importable from here as well
    "ClearAction", "MaximoApiKeyAuth", "MaximoAssetRef", "MaximoAuth", "MaximoMaxauthAuth",
    "MaximoSink", "MaximoSinkConfig", "OptimisticLock", "UnknownAssetPolicy",
]


@dataclass(frozen=True, slots=True)
class Target:
    assetnum: str
    siteid: str
    location: str | None


class _Flight:
    """A lock per dedup key, dropped when nobody waits on it any more."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class MaximoSink:
    """Implements `gateway.model.Sink`. One aiohttp session, created inside the running loop."""

    def __init__(self, cfg: MaximoSinkConfig, headers: dict[str, str]) -> None:
        self.name = cfg.name
        self._cfg = cfg
        self._base = cfg.base_url.rstrip("/")
        self._collection = f"{self._base}{cfg.api_root}/os/{cfg.object_structure}"
        self._http = MaximoHttp(base_url=self._base, headers=headers, tls=cfg.tls,
                                connect_timeout_seconds=cfg.connect_timeout_seconds,
                                first_byte_timeout_seconds=cfg.first_byte_timeout_seconds,
                                total_timeout_seconds=cfg.total_timeout_seconds,
                                concurrent_requests=max(cfg.concurrent_requests,
                                                        cfg.limits.max_in_flight))
        self.limits = cfg.limits
        self.first_byte_timeout_seconds = min(cfg.first_byte_timeout_seconds,
                                              cfg.total_timeout_seconds)
        self._flights: dict[str, _Flight] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def check(self) -> None:
        """Reachable, the key accepted and the object structure readable."""
        got = await self._http.request("GET", self._collection, params={
            "lean": "1", "oslc.select": "ticketid", "oslc.pageSize": "1"})
        if isinstance(got, BaseException):
            raise UpstreamCheckError(f"{self.name}: {transport_reason(got)}") from got
        if not 200 <= got.status < 300:
            raise UpstreamCheckError(
                f"{self.name}: HTTP {got.status} {maximo_error(got.body, got.content_type)}")
        if members(got.body) is None:
            raise UpstreamCheckError(f"{self.name}: {self._collection} did not answer a "
                                     "member[] collection (wrong api_root?)")

    async def query(self, object_structure: str, params: dict[str, str]
                    ) -> Answer | BaseException:
        """A lean GET of another object structure (mxapiasset for identity checks); a
        transport failure is returned, as `MaximoHttp.request` does."""
        url = f"{self._base}{self._cfg.api_root}/os/{object_structure}"
        return await self._http.request("GET", url, params={"lean": "1", **params})

    # --- sending -------------------------------------------------------------------------

    async def send(self, batch: Sequence[OutboxRecord]) -> Sequence[Delivery]:
        """One Delivery per record. Per asset in order; after a RETRY, later records of that
        asset in this batch wait too (a clear never overtakes its raise)."""
        return await send_in_episode_lanes(batch, self.send_one, self._cfg.concurrent_requests)

    async def send_one(self, rec: OutboxRecord) -> Delivery:
        try:
            if rec.message.kind is MessageKind.MAINTENANCE_REQUEST:
                return await self._raise(rec)
            if rec.message.kind is MessageKind.STATUS_UPDATE:
                return await self._clear(rec)
        except NotRenderable as exc:
            return Delivery(rec.id, Outcome.REJECTED, reason=str(exc)[:MAX_REASON])
        return Delivery(rec.id, Outcome.REJECTED, reason=f"unsupported kind {rec.message.kind}")

    async def _raise(self, rec: OutboxRecord) -> Delivery:
        held = wait_for_interrupted_send(rec, self._cfg.unclear_retry_after_seconds, time.time())
        if held is not None:
            return held
        body = rec.message.body
        key = dedup_key_of(body)
        target = self._target(str(body.get("asset", "")))
        payload = sr_body(body, assetnum=target.assetnum, siteid=target.siteid,
                          location=target.location, orgid=self._cfg.orgid,
                          reportedby=self._cfg.reportedby,
                          reportedpriority=self._priority(body.get("priority")),
                          external_system=self._cfg.external_system)
        where = (f"externalrecid={where_literal(key, 'dedup_key')} and "
                 f"siteid={where_literal(target.siteid, 'siteid')}")
        async with self._single_flight(key):
            found = await self._query(rec.id, where, "ticketid,status")
            if isinstance(found, Delivery):
                return _prefixed(found, f"looking up externalrecid {key}")
            if found:
                return self._accepted_ticket(rec.id, found[0], "lookup")
            existing = await self._existing_work(rec, target)
            if existing is not None:
                return existing
            got = await self._http.request("POST", self._collection, params={"lean": "1"},
                                           json=payload,
                                           headers={"properties": "ticketid,status",
                                                    "batcherror": "1"})
            if isinstance(got, BaseException):
                return Delivery(rec.id, Outcome.RETRY, reason=(
                    f"create: {transport_reason(got)}; the next attempt looks it up first"),
                    retry_after_seconds=self._cfg.unclear_retry_after_seconds)
            if not 200 <= got.status < 300:
                return self._unclear(_failed(rec.id, got, "create"), got.status)
            return self._accepted_ticket(rec.id, json_object(got.body) or {}, "create")

    async def _existing_work(self, rec: OutboxRecord, target: Target) -> Delivery | None:
        """Under `link` or `skip`: ACCEPTED with an open SR on the same asset that someone
        else made (linked: a work log note with our evidence); None under `create` or when
        there is none. Runs after our own externalrecid was not found."""
        body = rec.message.body
        policy = policy_for(body, self._cfg.existing_work_rules, self._cfg.existing_work)
        if policy is ExistingWork.CREATE:
            return None
        statuses = ",".join(where_literal(s, "status") for s in self._cfg.open_statuses)
        where = (f"assetnum={where_literal(target.assetnum, 'assetnum')} and "
                 f"siteid={where_literal(target.siteid, 'siteid')} and status in [{statuses}]")
        found = await self._query(rec.id, where,
                                  "ticketid,status,_rowstamp,externalrecid,worklog{description}")
        if isinstance(found, Delivery):
            return _prefixed(found, "looking up open SRs on the asset")
        key = dedup_key_of(body)
        theirs = [sr for sr in found if str(sr.get("externalrecid") or "") != key]
        if not theirs:
            return None
        sr = theirs[0]
        if policy is ExistingWork.SKIP:
            d = self._accepted_ticket(rec.id, sr, "open SR")
            return replace(d, reason=f"skipped: SR {d.receipt} is open on this asset already")
        if not _has_note(sr, link_marker(body)):
            got = await self._patch(sr, {"worklog": [link_entry(body)]})
            if isinstance(got, BaseException):  # a retry sees the note if it was made
                return Delivery(rec.id, Outcome.RETRY, reason=(
                    f"link note on SR {sr.get('ticketid')}: {transport_reason(got)}"))
            if not 200 <= got.status < 300:
                return _failed(rec.id, got, f"link note on SR {sr.get('ticketid')}")
        d = self._accepted_ticket(rec.id, sr, "open SR")
        return replace(d, reason=f"linked: evidence noted on open SR {d.receipt}")

    def _unclear(self, d: Delivery, status: int) -> Delivery:
        """A create answered 5xx/408 may still commit (a proxy gave up, Maximo did not): look
        again only after unclear_retry_after_seconds. A 429 was refused before any work."""
        if d.outcome is not Outcome.RETRY or status == 429:
            return d
        wait = max(d.retry_after_seconds or 0.0, self._cfg.unclear_retry_after_seconds)
        return replace(d, retry_after_seconds=wait)

    def _accepted_ticket(self, record_id: int, doc: Mapping[str, Any], step: str) -> Delivery:
        ticketid = doc.get("ticketid")
        if isinstance(ticketid, int | str) and not isinstance(ticketid, bool) and str(ticketid):
            return Delivery(record_id, Outcome.ACCEPTED, receipt=str(ticketid))
        return Delivery(record_id, Outcome.RETRY, reason=(
            f"{step}: 2xx without a ticketid in the answer; the next attempt looks the SR up "
            "by externalrecid"))

    async def _clear(self, rec: OutboxRecord) -> Delivery:
        msg = rec.message
        if not rec.upstream_ref:
            return Delivery(rec.id, Outcome.REJECTED, reason=(
                "no upstream reference: the service request of episode "
                f"{msg.episode_id} was never accepted (dead-lettered?), nothing to update"))
        ref = rec.upstream_ref
        key = dedup_key_of(msg.body)
        where = f"ticketid={where_literal(ref, 'ticketid')}"  # unique per class (pk [S*])
        wanted = "ticketid,status,_rowstamp,externalrecid,worklog{description}"
        async with self._single_flight(key):
            for attempt in (1, 2):
                found = await self._query(rec.id, where, wanted)
                if isinstance(found, Delivery):
                    return _prefixed(found, f"looking up SR {ref}")
                if not found:
                    return Delivery(rec.id, Outcome.REJECTED, reason=(
                        f"SR {ref} with externalrecid {key} not found in Maximo (deleted, or "
                        "its externalrecid was changed); nothing to update"))
                sr = found[0]
                if str(sr.get("externalrecid") or "") != key:  # someone else's (link, skip)
                    if not _has_note(sr, link_marker(msg.body)):
                        return Delivery(rec.id, Outcome.ACCEPTED, receipt=ref, reason=(
                            f"SR {ref} is someone else's and was not linked: left as it is"))
                    change = None if _has_note(sr, worklog_marker(msg.body)) else {
                        "worklog": [worklog_entry(msg.body)]}  # a note; never resolved by us
                else:
                    change = self._clear_change(sr, msg.body)
                if change is None:
                    return Delivery(rec.id, Outcome.ACCEPTED, receipt=ref)
                got = await self._patch(sr, change)
                if isinstance(got, BaseException):  # it may still commit: read it later
                    return Delivery(rec.id, Outcome.RETRY,
                                    reason=f"update of SR {ref}: {transport_reason(got)}",
                                    retry_after_seconds=self._cfg.unclear_retry_after_seconds)
                if got.status == 412 and attempt == 1:
                    continue  # updated by someone else since we read it: read again, once
                if not 200 <= got.status < 300:
                    return _failed(rec.id, got, f"update of SR {ref}")
                return Delivery(rec.id, Outcome.ACCEPTED, receipt=ref)
        raise AssertionError("unreachable")

    def _clear_change(self, sr: Mapping[str, Any], body: Mapping[str, Any]
                      ) -> dict[str, Any] | None:
        """The PATCH body a clear needs; None when the SR already shows it. An incident update
        (roll-up) only ever adds its work log note."""
        if self._cfg.on_clear is ClearAction.RESOLVE and not body.get("update"):
            settled = {s.upper() for s in self._cfg.settled_statuses}
            if str(sr.get("status", "")).upper() in settled | {self._cfg.resolved_status}:
                return None
            return {"status": self._cfg.resolved_status}
        notes = sr.get("worklog")
        marker = worklog_marker(body)
        if isinstance(notes, list) and any(
                isinstance(n, dict) and str(n.get("description", "")).startswith(marker)
                for n in notes):
            return None
        return {"worklog": [worklog_entry(body)]}

    async def _patch(self, sr: Mapping[str, Any], change: dict[str, Any]
                     ) -> Answer | BaseException:
        headers = {"x-method-override": "PATCH", "patchtype": "MERGE"}
        rowstamp = sr.get("_rowstamp")
        if rowstamp is not None and self._cfg.optimistic_lock is OptimisticLock.IF_MATCH:
            headers["if-match"] = str(rowstamp)
        elif rowstamp is not None and self._cfg.optimistic_lock is OptimisticLock.ROWSTAMP_IN_BODY:
            change = change | {"_rowstamp": rowstamp}
        url = self._member_url(str(sr.get("href", "")))
        if url is None:
            raise NotRenderable(f"SR {sr.get('ticketid')} came back without a usable href")
        return await self._http.request("POST", url, params={"lean": "1"}, json=change,
                                        headers=headers)

    def _member_url(self, href: str) -> str | None:
        """The member URI on *our* base_url and api_root: Maximo builds hrefs from its own idea
        of its address (mxe.oslc.webappurl: an internal name, http behind a TLS ingress, the
        /oslc route), so keep only `/os/<structure>/<restid>`."""
        path = urlsplit(href).path
        at = path.lower().rfind("/os/")
        if at < 0 or path.count("/", at) != 3:
            return None
        return f"{self._base}{self._cfg.api_root}{path[at:]}"

    # --- helpers -------------------------------------------------------------------------

    def _target(self, asset: str) -> Target:
        ref = self._cfg.asset_map.get(asset)
        if ref is not None:
            return Target(ref.assetnum, ref.siteid or self._cfg.siteid, ref.location)
        if self._cfg.unknown_asset is UnknownAssetPolicy.PASS_THROUGH and asset:
            where_literal(asset, "asset")
            return Target(asset, self._cfg.siteid, None)
        raise NotRenderable(f"asset {asset!r} has no entry in asset_map of upstream "
                            f"{self.name!r} (add it there or in the asset registry, or set "
                            "unknown_asset = \"pass_through\")")

    def _priority(self, canonical: Any) -> int:
        if (isinstance(canonical, int) and not isinstance(canonical, bool)
                and canonical in self._cfg.priority_map):
            return self._cfg.priority_map[canonical]
        raise NotRenderable(f"priority {canonical!r} is not in priority_map (1..4)")

    @contextlib.asynccontextmanager
    async def _single_flight(self, key: str) -> AsyncIterator[None]:
        """One lookup-then-create (or update) per dedup key at a time, in this process."""
        flight = self._flights.setdefault(key, _Flight())
        flight.users += 1
        try:
            async with flight.lock:
                yield
        finally:
            flight.users -= 1
            if flight.users == 0:
                del self._flights[key]

    async def _query(self, record_id: int, where: str, select: str
                     ) -> list[dict[str, Any]] | Delivery:
        got = await self._http.request("GET", self._collection, params={
            "lean": "1", "oslc.where": where, "oslc.select": select,
            "oslc.orderBy": "+ticketid"})
        if isinstance(got, BaseException):
            return Delivery(record_id, Outcome.RETRY, reason=transport_reason(got))
        if not 200 <= got.status < 300:
            return _failed(record_id, got)
        found = members(got.body)
        if found is None:
            return Delivery(record_id, Outcome.RETRY,
                            reason="2xx without a member[] list; asking again before creating")
        return found


    # --- reading back: status polling and reconciliation (gateway/status_poll.py) ---------

    async def read_record(self, upstream_ref: str) -> UpstreamRecord | None:
        """SR `upstream_ref` (its ticketid) now; None when Maximo no longer has it."""
        found = await self._read_back(f"ticketid={where_literal(upstream_ref, 'ticketid')}")
        return found[0] if found else None

    async def records_by_reference(self, external_ref: str) -> list[UpstreamRecord]:
        """Every SR whose externalrecid is `external_ref`."""
        return await self._read_back(
            f"externalrecid={where_literal(external_ref, 'external reference')}")

    async def _read_back(self, where: str) -> list[UpstreamRecord]:
        got = await self._http.request("GET", self._collection, params={
            "lean": "1", "oslc.where": where, "oslc.select": "ticketid,status,externalrecid",
            "oslc.orderBy": "+ticketid"})
        if isinstance(got, BaseException):
            raise UpstreamReadError(f"{self.name}: {transport_reason(got)}")
        if not 200 <= got.status < 300:
            raise UpstreamReadError(f"{self.name}: HTTP {got.status} "
                                    f"{maximo_error(got.body, got.content_type)}")
        found = members(got.body)
        if found is None:
            raise UpstreamReadError(f"{self.name}: 2xx without a member[] list")
        return [sr_record(m) for m in found if m.get("ticketid") is not None]


# IBM's SR app treats NEW, QUEUED, PENDING and INPROG as active and every other status as
# done (IBM-APPS SRMOBILE AppController.js [S*]); INPROG and PENDING mean someone took it up.
SR_WAITING = frozenset({"NEW", "QUEUED"})
SR_WORKED_ON = frozenset({"INPROG", "PENDING"})


def sr_record(member: Mapping[str, Any]) -> UpstreamRecord:
    status = str(member.get("status") or "")
    word = status.upper()
    state = (WorkState.CREATED if word in SR_WAITING or not word
             else WorkState.IN_PROGRESS if word in SR_WORKED_ON else WorkState.COMPLETED)
    ref = member.get("externalrecid")
    return UpstreamRecord(str(member["ticketid"]), state, status, str(ref) if ref else None)


def _failed(record_id: int, got: Answer, step: str = "") -> Delivery:
    verdict = classify_status(got.status, maximo_error(got.body, got.content_type),
                              got.retry_after)
    reason = f"{step}: {verdict.reason}" if step else verdict.reason
    outcome = verdict.outcome
    if got.status == 412:  # still stale after a fresh read: a busy record, try again later
        outcome, reason = Outcome.RETRY, reason + " (record busy: updated again meanwhile)"
    return Delivery(record_id, outcome, reason=reason[:MAX_REASON],
                    retry_after_seconds=verdict.retry_after_seconds)


def _has_note(sr: Mapping[str, Any], marker: str) -> bool:
    notes = sr.get("worklog")
    return isinstance(notes, list) and any(
        isinstance(n, dict) and str(n.get("description", "")).startswith(marker) for n in notes)


def _prefixed(d: Delivery, what: str) -> Delivery:
    return replace(d, reason=f"{what}: {d.reason}"[:MAX_REASON])
