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

Existing work (open SRs and work orders someone else made; WO receipts "WO:<wonum>") lives in
gateway/upstream/maximo_work.py, the spare-parts steps in gateway/upstream/maximo_parts.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from gateway.model import Delivery, MessageKind, OutboxRecord, Outcome
from gateway.status_poll import UpstreamReadError, UpstreamRecord
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
from gateway.upstream.maximo_domains import maximo_domain_problems
from gateway.upstream.maximo_http import Answer, MaximoHttp
from gateway.upstream.maximo_parts import MaximoPartsSteps
from gateway.upstream.maximo_wire import (
    MAX_REASON,
    NotRenderable,
    dedup_key_of,
    failed,
    has_note,
    json_object,
    link_marker,
    maximo_error,
    members,
    patch_delivery,
    prefixed,
    sr_body,
    where_literal,
    worklog_entry,
    worklog_marker,
)
from gateway.upstream.maximo_work import OpenWork, sr_record, wonum_of
from gateway.upstream.rest import UpstreamCheckError, transport_reason
from gateway.upstream.retry_policy import wait_for_interrupted_send
from gateway.workflow import PART_STEPS, PartLine

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
        self._work = OpenWork(self)
        self._parts = MaximoPartsSteps(self)

    @property
    def config(self) -> MaximoSinkConfig:
        return self._cfg

    def parts_for(self, asset: str, failure_code: str) -> Sequence[PartLine]:
        """The registry's spare parts for a raise of `failure_code` on `asset`: after the
        request is accepted, gateway/workflow.py chains the parts steps (maximo_parts.py)."""
        return tuple(self._cfg.spare_parts.get(asset, {}).get(failure_code, ()))

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
        return await self._http.request("GET", self._url(object_structure),
                                        params={"lean": "1", **params})

    async def create(self, object_structure: str, payload: dict[str, Any], properties: str
                     ) -> Answer | BaseException:
        """A lean POST creating one record of `object_structure`, answered with
        `properties` (the parts steps, gateway/upstream/maximo_parts.py)."""
        return await self._http.request("POST", self._url(object_structure),
                                        params={"lean": "1"}, json=payload,
                                        headers={"properties": properties, "batcherror": "1"})

    def _url(self, structure: str | None) -> str:
        if structure is None:
            return self._collection
        return f"{self._base}{self._cfg.api_root}/os/{structure}"

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
            if rec.message.kind in PART_STEPS:
                return await self._parts.send(rec)
        except NotRenderable as exc:
            return Delivery(rec.id, Outcome.REJECTED, reason=str(exc)[:MAX_REASON])
        return Delivery(rec.id, Outcome.REJECTED, reason=f"unsupported kind {rec.message.kind}")

    async def _raise(self, rec: OutboxRecord) -> Delivery:
        held = wait_for_interrupted_send(rec, self._cfg.unclear_retry_after_seconds, time.time())
        if held is not None:
            return held
        body = rec.message.body
        key = dedup_key_of(body)
        target = self.target(str(body.get("asset", "")))
        payload = sr_body(body, assetnum=target.assetnum, siteid=target.siteid,
                          location=target.location, orgid=self._cfg.orgid,
                          reportedby=self._cfg.reportedby,
                          reportedpriority=self._priority(body.get("priority")),
                          external_system=self._cfg.external_system)
        where = (f"externalrecid={where_literal(key, 'dedup_key')} and "
                 f"siteid={where_literal(target.siteid, 'siteid')}")
        async with self._single_flight(key):
            found = await self.query_members(rec.id, where, "ticketid,status")
            if isinstance(found, Delivery):
                return prefixed(found, f"looking up externalrecid {key}")
            if found:
                return self._accepted_ticket(rec.id, found[0], "lookup")
            existing = await self._work.use_existing(rec, target)
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
                return self._unclear(failed(rec.id, got, "create"), got.status)
            return self._accepted_ticket(rec.id, json_object(got.body) or {}, "create")

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
        wonum = wonum_of(ref)
        if wonum is not None:  # linked (or skipped) to someone else's work order
            async with self._single_flight(key):
                return await self._work.clear_on_wo(rec, wonum, self.target(msg.asset))
        where = f"ticketid={where_literal(ref, 'ticketid')}"  # unique per class (pk [S*])
        wanted = "ticketid,status,_rowstamp,externalrecid,worklog{description}"
        async with self._single_flight(key):
            for attempt in (1, 2):
                found = await self.query_members(rec.id, where, wanted)
                if isinstance(found, Delivery):
                    return prefixed(found, f"looking up SR {ref}")
                if not found:
                    return Delivery(rec.id, Outcome.REJECTED, reason=(
                        f"SR {ref} with externalrecid {key} not found in Maximo (deleted, or "
                        "its externalrecid was changed); nothing to update"))
                sr = found[0]
                if str(sr.get("externalrecid") or "") != key:  # someone else's (link, skip)
                    if not has_note(sr, link_marker(msg.body)):
                        return Delivery(rec.id, Outcome.ACCEPTED, receipt=ref, reason=(
                            f"SR {ref} is someone else's and was not linked: left as it is"))
                    change = None if has_note(sr, worklog_marker(msg.body)) else {
                        "worklog": [worklog_entry(msg.body)]}  # a note; never resolved by us
                else:
                    change = self._clear_change(sr, msg.body)
                if change is None:
                    return Delivery(rec.id, Outcome.ACCEPTED, receipt=ref)
                said = patch_delivery(rec.id, await self.patch(sr, change),
                                      f"update of SR {ref}", ref, attempt,
                                      self._cfg.unclear_retry_after_seconds)
                if said is None:
                    continue  # updated by someone else since we read it: read again, once
                return said
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

    async def patch(self, sr: Mapping[str, Any], change: dict[str, Any]
                    ) -> Answer | BaseException:
        """A MERGE update of the member `sr` (an SR or a work order) under its rowstamp."""
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

    def target(self, asset: str) -> Target:
        """Where `asset` lives in Maximo (asset_map, or passed through)."""
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

    async def query_members(self, record_id: int, where: str, select: str, *,
                            structure: str | None = None, order_by: str = "+ticketid"
                            ) -> list[dict[str, Any]] | Delivery:
        """The members of a lean query on our object structure (or `structure`); a failure
        as the Delivery of `record_id`."""
        got = await self._http.request("GET", self._url(structure), params={
            "lean": "1", "oslc.where": where, "oslc.select": select,
            "oslc.orderBy": order_by})
        if isinstance(got, BaseException):
            return Delivery(record_id, Outcome.RETRY, reason=transport_reason(got))
        if not 200 <= got.status < 300:
            return failed(record_id, got)
        found = members(got.body)
        if found is None:
            return Delivery(record_id, Outcome.RETRY,
                            reason="2xx without a member[] list; asking again before creating")
        return found

    # --- check --online: the priority and failure-code domains (gateway/registry_online.py)

    async def domain_problems(self, *, priorities: Collection[int],
                              failure_codes: Collection[str]) -> list[str]:
        """Which of the rules' canonical priorities and failure codes Maximo does not know, in
        plain words ([] when all are known); see gateway/upstream/maximo_domains.py."""
        return await maximo_domain_problems(self, priorities=priorities,
                                            failure_codes=failure_codes)

    # --- reading back: status polling and reconciliation (gateway/status_poll.py) ---------

    async def read_record(self, upstream_ref: str) -> UpstreamRecord | None:
        """SR `upstream_ref` (its ticketid), or the work order of a "WO:<wonum>" receipt, now;
        None when Maximo no longer has it."""
        wonum = wonum_of(upstream_ref)
        if wonum is not None:
            return await self._work.read_wo(wonum)
        found = await self.read_members(f"ticketid={where_literal(upstream_ref, 'ticketid')}",
                                        "ticketid,status,externalrecid")
        return sr_record(found[0]) if found and found[0].get("ticketid") is not None else None

    async def records_by_reference(self, external_ref: str) -> list[UpstreamRecord]:
        """Every SR whose externalrecid is `external_ref` (we create SRs only)."""
        found = await self.read_members(
            f"externalrecid={where_literal(external_ref, 'external reference')}",
            "ticketid,status,externalrecid")
        return [sr_record(m) for m in found if m.get("ticketid") is not None]

    async def read_members(self, where: str, select: str, *, structure: str | None = None,
                           order_by: str = "+ticketid") -> list[dict[str, Any]]:
        """A lean query for reading back; any failure raises UpstreamReadError."""
        got = await self._http.request("GET", self._url(structure), params={
            "lean": "1", "oslc.where": where, "oslc.select": select,
            "oslc.orderBy": order_by})
        if isinstance(got, BaseException):
            raise UpstreamReadError(f"{self.name}: {transport_reason(got)}")
        if not 200 <= got.status < 300:
            raise UpstreamReadError(f"{self.name}: HTTP {got.status} "
                                    f"{maximo_error(got.body, got.content_type)}")
        found = members(got.body)
        if found is None:
            raise UpstreamReadError(f"{self.name}: 2xx without a member[] list")
        return found
