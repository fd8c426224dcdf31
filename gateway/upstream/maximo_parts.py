"""The Maximo spare-parts steps: stock check, reservation, purchase requisition.

Each step is one outbox record; gateway/workflow.py says when which is enqueued (after the SR
was accepted, each only after the previous one was). Maximo takes no idempotency key, so each
creating step first looks up its own deterministic reference, as the SR does with externalrecid:

* stock (`MXAPIINVENTORY` [S*]; `curbal` per itemnum + storeroom `location` + siteid [T, a live
  probe]): a read. The receipt is the stock read (`workflow.stock_receipt`, keyed by the
  registry's part place), which the reservation step carries. No inventory record: 0.
* reservation (`MXAPIINVRES`, INVRESERVE: itemnum, location, storelocsiteid, reservedqty,
  requireddate, restype, assetnum, wonum, requestnum [S*]): one record per part (Maximo keeps one
  INVRESERVE row per item). The reference is `requestnum = <dedup_key>` (the SR's externalrecid):
  that an API client may set REQUESTNUM and filter on it is an assumption [U]. A retry creates
  only the parts not found under that reference. When the episode was linked to a work order
  ("WO:<wonum>" receipt) the reservation names it in `wonum`; an SR has no field on INVRESERVE.
  The receipt is the invreserveids, comma-separated.
* requisition (`MXAPIPR`: seen only in a third-party table [T]; IBM documents the integration
  object MXPR with PR/PRLINE [S]): `externalrefid = <dedup_key>` is the reference [U], with one
  `prline` per low part (itemnum, orderqty, storeloc, linetype ITEM [U]). The order unit is left
  to the item master (the registry's unit is SAP-style, "EA"). The receipt is the prnum.

The registry's `storage_location` (4 characters, SAP-shaped) names a Maximo storeroom through
`parts.storerooms` (key "plant/storage_location" or "storage_location"); unmapped, it is used
as the storeroom itself. The site is the asset's siteid.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from gateway.model import Delivery, MessageKind, OutboxRecord, Outcome
from gateway.upstream.maximo_wire import failed, json_object, prefixed, where_literal
from gateway.upstream.rest import transport_reason
from gateway.upstream.retry_policy import wait_for_interrupted_send
from gateway.workflow import PartLine, stock_receipt

if TYPE_CHECKING:
    from gateway.upstream.maximo import MaximoSink
    from gateway.upstream.maximo_http import Answer

DESCRIPTION_MAX = 100


class MaximoPartsSteps:
    """Sends the three parts steps for one MaximoSink (its HTTP session, its config)."""

    def __init__(self, sink: MaximoSink) -> None:
        self._sink = sink

    def storeroom(self, part: PartLine) -> str:
        rooms = self._sink.config.parts.storerooms
        return rooms.get(f"{part.plant}/{part.storage_location}",
                         rooms.get(part.storage_location, part.storage_location))

    async def send(self, rec: OutboxRecord) -> Delivery:
        body = rec.message.body
        try:
            parts = [PartLine.model_validate(p) for p in body.get("parts") or []]
        except ValueError as exc:
            return Delivery(rec.id, Outcome.REJECTED, reason=f"parts list unreadable: {exc}")
        if not parts or not body.get("request_ref") or not body.get("dedup_key"):
            return Delivery(rec.id, Outcome.REJECTED, reason=(
                "a parts step needs parts, request_ref and dedup_key in its body"))
        site = self._sink.target(rec.message.asset).siteid
        kind = rec.message.kind
        if kind is MessageKind.PARTS_STOCK:
            return await self._stock(rec, parts, site)
        held = wait_for_interrupted_send(rec, self._sink.config.unclear_retry_after_seconds,
                                         time.time())
        if held is not None:
            return held
        if kind is MessageKind.PARTS_RESERVATION:
            return await self._reservation(rec, parts, site)
        return await self._requisition(rec, site)

    # --- stock ----------------------------------------------------------------------------

    async def _stock(self, rec: OutboxRecord, parts: Sequence[PartLine], site: str
                     ) -> Delivery:
        levels: dict[str, float] = {}
        for part in parts:
            if part.place in levels:
                continue
            room = self.storeroom(part)
            where = (f"itemnum={where_literal(part.material, 'itemnum')} and "
                     f"location={where_literal(room, 'storeroom')} and "
                     f"siteid={where_literal(site, 'siteid')}")
            rows = await self._sink.query_members(
                rec.id, where, "itemnum,location,curbal",
                structure=self._sink.config.parts.inventory_structure, order_by="+itemnum")
            if isinstance(rows, Delivery):
                return prefixed(rows, f"stock of {part.material} in {room}")
            try:
                levels[part.place] = sum((float(r.get("curbal") or 0) for r in rows), 0.0)
            except (TypeError, ValueError):
                return Delivery(rec.id, Outcome.RETRY, reason=(
                    f"stock of {part.material} in {room}: curbal is not a number"))
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=stock_receipt(levels))

    # --- reservation ----------------------------------------------------------------------

    async def _reservation(self, rec: OutboxRecord, parts: Sequence[PartLine], site: str
                           ) -> Delivery:
        body = rec.message.body
        key = str(body["dedup_key"])
        cfg = self._sink.config.parts
        where = f"requestnum={where_literal(key, 'dedup_key')}"
        found = await self._sink.query_members(
            rec.id, where, "invreserveid,itemnum,location,reservedqty",
            structure=cfg.reservation_structure, order_by="+invreserveid")
        if isinstance(found, Delivery):
            return prefixed(found, f"look-up of reservations {key}")
        made = {(str(r.get("itemnum")), str(r.get("location"))): str(r.get("invreserveid"))
                for r in found if r.get("invreserveid") is not None}
        wanted: dict[tuple[str, str], float] = {}
        for part in parts:  # the same item twice in one storeroom: one reservation, summed
            place = (part.material, self.storeroom(part))
            wanted[place] = wanted.get(place, 0.0) + part.quantity
        need = (datetime.now(UTC) + timedelta(days=cfg.lead_time_days)).isoformat(
            timespec="seconds")
        ref = str(body["request_ref"])
        target = self._sink.target(rec.message.asset)
        for (item, room), qty in wanted.items():
            if (item, room) in made:
                continue  # made by an earlier attempt
            payload: dict[str, Any] = {
                "itemnum": item, "location": room, "storelocsiteid": site,
                "reservedqty": qty, "requireddate": need, "restype": cfg.restype,
                "requestnum": key, "assetnum": target.assetnum}
            if ref.startswith("WO:"):
                payload["wonum"] = ref.removeprefix("WO:")
            got = await self._sink.create(cfg.reservation_structure, payload,
                                          "invreserveid,itemnum,location")
            number = self._created(rec.id, got, "invreserveid", f"reservation of {item}")
            if isinstance(number, Delivery):
                return number
            made[(item, room)] = number
        numbers = sorted({made[p] for p in wanted}, key=lambda n: (len(n), n))
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=",".join(numbers))

    # --- requisition ----------------------------------------------------------------------

    async def _requisition(self, rec: OutboxRecord, site: str) -> Delivery:
        body = rec.message.body
        key = str(body["dedup_key"])
        cfg = self._sink.config.parts
        order: list[Mapping[str, Any]] = list(body.get("order") or [])
        if not order:
            return Delivery(rec.id, Outcome.REJECTED, reason="requisition step without parts")
        where = (f"externalrefid={where_literal(key, 'dedup_key')} and "
                 f"siteid={where_literal(site, 'siteid')}")
        found = await self._sink.query_members(rec.id, where, "prnum,status",
                                               structure=cfg.requisition_structure,
                                               order_by="+prnum")
        if isinstance(found, Delivery):
            return prefixed(found, f"look-up of requisition {key}")
        numbers = sorted(str(r["prnum"]) for r in found if r.get("prnum") is not None)
        if numbers:
            return Delivery(rec.id, Outcome.ACCEPTED, receipt=numbers[0], reason=(
                f"requisition {key} exists already as PR {numbers[0]} (an earlier attempt)"))
        lines = []
        for raw in order:
            part = PartLine.model_validate({k: v for k, v in raw.items()
                                            if k in PartLine.model_fields})
            lines.append({"itemnum": part.material, "orderqty": float(raw["order_quantity"]),
                          "storeloc": self.storeroom(part), "linetype": "ITEM"})
        what = f"SR {body['request_ref']}" if not str(body["request_ref"]).startswith(
            "WO:") else f"WO {str(body['request_ref']).removeprefix('WO:')}"
        payload = {"siteid": site, "externalrefid": key, "prline": lines,
                   "description": f"Spare parts for {what} ({rec.message.asset})"[
                       :DESCRIPTION_MAX]}
        got = await self._sink.create(cfg.requisition_structure, payload, "prnum,status")
        number = self._created(rec.id, got, "prnum", f"requisition {key}")
        if isinstance(number, Delivery):
            return number
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=number)

    # --- shared ---------------------------------------------------------------------------

    def _created(self, record_id: int, got: Answer | BaseException, field: str, what: str
                 ) -> str | Delivery:
        """The new record's number, or the Delivery saying why there is none. An unclear
        outcome waits before the next attempt, which looks the reference up first."""
        wait = self._sink.config.unclear_retry_after_seconds
        if isinstance(got, BaseException):
            return Delivery(record_id, Outcome.RETRY, retry_after_seconds=wait, reason=(
                f"create of {what}: {transport_reason(got)}; the next attempt looks it up "
                "first"))
        if not 200 <= got.status < 300:
            d = failed(record_id, got, f"create of {what}")
            if d.outcome is Outcome.RETRY and got.status != 429:
                return Delivery(record_id, Outcome.RETRY, reason=d.reason,
                                retry_after_seconds=max(d.retry_after_seconds or 0.0, wait))
            return d
        number = (json_object(got.body) or {}).get(field)
        if isinstance(number, int | str) and not isinstance(number, bool) and str(number):
            return str(number)
        return Delivery(record_id, Outcome.RETRY, reason=(
            f"create of {what} answered HTTP {got.status} without {field}; the next attempt "
            "looks it up before creating again"))
