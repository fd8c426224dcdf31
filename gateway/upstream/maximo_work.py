"""Existing work first, in Maximo: open service requests AND work orders on the asset.

Under `existing_work = "link"` or `"skip"` (per rule, gateway/workflow.py), a raise whose own
SR (externalrecid) does not exist yet looks for open work someone else made on the same asset
and site before creating:

* SRs (`mxapisr`): status in `open_statuses` (NEW, QUEUED, INPROG, PENDING [S*]), as before.
* Work orders (`wo_object_structure`, default `mxapiwodetail`): status in `open_wo_statuses`
  (WAPPR, APPR, WSCH, WMATL, WPCOND, INPRG: every WO status but COMP, CLOSE, CAN, HISTEDIT [S]).

**Failure codes.** A work order carries `failurecode`; an SR carries none. When the raising
rule has a `failure_code`, a WO with *another* failure code is not "the same work" and is never
used; a WO with the same code is the best match; then comes an open SR (it cannot say what it
is about: the person who wrote it saw something on this asset, as we did); last a WO without
a failure code (unclassified work, most likely a different job than a fault). Without a
failure code on the rule every open WO ranks above every SR: the WO is where the work is
planned. Within a rank the oldest (lowest number) wins.

**Receipts.** An SR keeps its plain ticketid ("1001"), as before, so stored receipts keep
working; a work order is "WO:<wonum>". `read_record`, `records_by_reference` and the clear tell
them apart by that prefix. A wonum is unique per site [U: autokey scope is site or org
configuration]; the clear also matches the asset's siteid, the read-back does not know it.

**Link.** The evidence goes on the WO as a work log note (`POST <href>` + `x-method-override:
PATCH` + `patchtype: MERGE`, as on SRs [S]); its description carries our dedup key so a retry
does not add it twice. The clear adds a "Condition cleared" note there and never changes the
WO's status: it is someone else's work order.

Reading back (status poll, reconcile): `sr_record` and `wo_record` map an SR's or a WO's status
onto created / in progress / completed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gateway.model import Delivery, OutboxRecord, Outcome
from gateway.status_poll import UpstreamRecord, WorkState
from gateway.upstream.maximo_wire import (
    dedup_key_of,
    failed,
    has_note,
    link_entry,
    link_marker,
    patch_delivery,
    prefixed,
    where_literal,
    worklog_entry,
    worklog_marker,
)
from gateway.upstream.rest import transport_reason
from gateway.workflow import ExistingWork, policy_for

if TYPE_CHECKING:
    from gateway.upstream.maximo import MaximoSink, Target

WO_PREFIX = "WO:"
# WO statuses [S] as the status poll reads them; a site synonym of another value reads as
# "created" (still open): it is polled again rather than taken for done.
WO_WORKED_ON = frozenset({"INPRG"})
WO_DONE = frozenset({"COMP", "CLOSE", "CAN", "HISTEDIT"})
WO_SELECT = "wonum,status,failurecode,siteid,_rowstamp,worklog{description}"


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


def wo_receipt(wonum: str) -> str:
    return f"{WO_PREFIX}{wonum}"


def wonum_of(receipt: str) -> str | None:
    """The wonum of a work order receipt; None for an SR receipt (a bare ticketid)."""
    return receipt[len(WO_PREFIX):] if receipt.startswith(WO_PREFIX) else None


def wo_record(member: Mapping[str, Any]) -> UpstreamRecord:
    status = str(member.get("status") or "")
    word = status.upper()
    state = (WorkState.IN_PROGRESS if word in WO_WORKED_ON
             else WorkState.COMPLETED if word in WO_DONE else WorkState.CREATED)
    return UpstreamRecord(wo_receipt(str(member["wonum"])), state, status, None)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One piece of open work someone else made on the asset."""

    rank: int
    number: int | str
    kind: str  # "SR" or "WO"
    doc: Mapping[str, Any]

    @property
    def receipt(self) -> str:
        return (wo_receipt(str(self.doc["wonum"])) if self.kind == "WO"
                else str(self.doc["ticketid"]))

    @property
    def label(self) -> str:
        return f"{self.kind} {self.doc['wonum' if self.kind == 'WO' else 'ticketid']}"


def _number(value: Any) -> int | str:
    text = str(value)
    return int(text) if text.isdigit() else text


def rank_work(srs: list[dict[str, Any]], wos: list[dict[str, Any]],
              failure_code: str) -> list[Candidate]:
    """The usable open work, best first (see the module docstring for the order)."""
    out = [Candidate(1, _number(sr["ticketid"]), "SR", sr) for sr in srs
           if sr.get("ticketid") is not None]
    for wo in wos:
        if wo.get("wonum") is None:
            continue
        theirs = str(wo.get("failurecode") or "").upper()
        if not failure_code or theirs == failure_code.upper():
            rank = 0
        elif not theirs:
            rank = 2
        else:
            continue  # another failure code: other work
        out.append(Candidate(rank, _number(wo["wonum"]), "WO", wo))
    return sorted(out, key=lambda c: (c.rank, *_sortable(c.number)))


def _sortable(number: int | str) -> tuple[int, int, str]:
    return (0, number, "") if isinstance(number, int) else (1, 0, number)


class OpenWork:
    """Finds, links and clears on open work for one MaximoSink (its HTTP, its config)."""

    def __init__(self, sink: MaximoSink) -> None:
        self._sink = sink
        self._cfg = sink.config

    async def use_existing(self, rec: OutboxRecord, target: Target) -> Delivery | None:
        """Under `link` or `skip`: ACCEPTED with the best open SR or WO on the asset that
        someone else made (linked: a work log note with our evidence); None under `create` or
        when there is none. Runs after our own externalrecid was not found."""
        body = rec.message.body
        policy = policy_for(body, self._cfg.existing_work_rules, self._cfg.existing_work)
        if policy is ExistingWork.CREATE:
            return None
        asset = (f"assetnum={where_literal(target.assetnum, 'assetnum')} and "
                 f"siteid={where_literal(target.siteid, 'siteid')}")
        statuses = ",".join(where_literal(s, "status") for s in self._cfg.open_statuses)
        srs = await self._sink.query_members(
            rec.id, f"{asset} and status in [{statuses}]",
            "ticketid,status,_rowstamp,externalrecid,worklog{description}")
        if isinstance(srs, Delivery):
            return prefixed(srs, "looking up open SRs on the asset")
        key = dedup_key_of(body)
        srs = [sr for sr in srs if str(sr.get("externalrecid") or "") != key]
        wos: list[dict[str, Any]] = []
        if self._cfg.wo_object_structure:
            statuses = ",".join(where_literal(s, "status") for s in self._cfg.open_wo_statuses)
            found = await self._sink.query_members(
                rec.id, f"{asset} and status in [{statuses}]", WO_SELECT,
                structure=self._cfg.wo_object_structure, order_by="+wonum")
            if isinstance(found, Delivery):
                found = prefixed(found, "looking up open work orders on the asset")
                if found.outcome is Outcome.REJECTED:  # most likely no such object structure
                    found = replace(found, reason=found.reason[:300] + (
                        f" (no {self._cfg.wo_object_structure} here? set wo_object_structure "
                        'to yours, or "" to look at SRs only)'))
                return found
            wos = found
        ranked = rank_work(srs, wos, str(body.get("failure_code") or ""))
        if not ranked:
            return None
        best = ranked[0]
        if policy is ExistingWork.SKIP:
            return Delivery(rec.id, Outcome.ACCEPTED, receipt=best.receipt, reason=(
                f"skipped: {best.label} is open on this asset already"))
        if not has_note(best.doc, link_marker(body)):
            got = await self._sink.patch(best.doc, {"worklog": [link_entry(body)]})
            if isinstance(got, BaseException):  # a retry sees the note if it was made
                return Delivery(rec.id, Outcome.RETRY, reason=(
                    f"link note on {best.label}: {transport_reason(got)}"))
            if not 200 <= got.status < 300:
                return failed(rec.id, got, f"link note on {best.label}")
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=best.receipt, reason=(
            f"linked: evidence noted on open {best.label}"))

    async def clear_on_wo(self, rec: OutboxRecord, wonum: str, target: Target) -> Delivery:
        """The clear of an episode linked (or skipped) to work order `wonum`: a work log note
        when we linked it, nothing when we only skipped to it; never a status change."""
        ref = wo_receipt(wonum)
        where = (f"wonum={where_literal(wonum, 'wonum')} and "
                 f"siteid={where_literal(target.siteid, 'siteid')}")
        body = rec.message.body
        for attempt in (1, 2):
            found = await self._sink.query_members(
                rec.id, where, WO_SELECT, structure=self._cfg.wo_object_structure or
                "mxapiwodetail", order_by="+wonum")
            if isinstance(found, Delivery):
                return prefixed(found, f"looking up WO {wonum}")
            if not found:
                return Delivery(rec.id, Outcome.REJECTED, reason=(
                    f"WO {wonum} at site {target.siteid} not found in Maximo (deleted?); "
                    "nothing to note"))
            wo = found[0]
            if not has_note(wo, link_marker(body)):
                return Delivery(rec.id, Outcome.ACCEPTED, receipt=ref, reason=(
                    f"WO {wonum} is someone else's and was not linked: left as it is"))
            if has_note(wo, worklog_marker(body)):
                return Delivery(rec.id, Outcome.ACCEPTED, receipt=ref)
            said = patch_delivery(rec.id, await self._sink.patch(wo, {"worklog": [
                worklog_entry(body)]}), f"note on WO {wonum}", ref, attempt,
                self._cfg.unclear_retry_after_seconds)
            if said is None:
                continue  # saved by someone else since we read it: read again, once
            return said
        raise AssertionError("unreachable")

    async def read_wo(self, wonum: str) -> UpstreamRecord | None:
        """Work order `wonum` now (status poll, reconcile); None when Maximo has none."""
        found = await self._sink.read_members(
            f"wonum={where_literal(wonum, 'wonum')}", "wonum,status",
            structure=self._cfg.wo_object_structure or "mxapiwodetail", order_by="+wonum")
        return wo_record(found[0]) if found else None
