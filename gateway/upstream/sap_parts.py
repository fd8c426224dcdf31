"""The SAP spare-parts steps: stock check, reservation, purchase requisition.

Each step is one outbox record (gateway/workflow.py says when which is enqueued). SAP takes no
idempotency key on these services either, so each creating step first looks up its own
deterministic reference, as the notification does with its external reference:

* stock (API_MATERIAL_STOCK_SRV, `A_MatlStkInAcctMod` [S]): a read. Available stock is the
  unrestricted own stock, `InventoryStockType eq '01'` and `InventorySpecialStockType eq ''`
  ([T]: the code list was not seen in SAP's docs), summed over batches. The receipt is the
  stock read (`workflow.stock_receipt`), which the reservation step carries.
* reservation (API_RESERVATION_DOCUMENT_SRV, deep insert of `A_ReservationDocumentHeader` with
  `to_ReservationDocumentItem` [S]): a reservation has no notification field (RESV [S]), so it
  is booked on the configured cost center and every item says `ReservationItemText =
  "<dedup_key> N<notification>"`, which is also the look-up reference. That this field can be
  filtered is an assumption [U] (UPSTREAM-WORKFLOW-APIS §3, unverified item 3).
* requisition (API_PURCHASEREQ_PROCESS_SRV, deep insert of `A_PurchaseRequisitionHeader` with
  `to_PurchaseReqnItem` [S]): `PurReqnExternalReference = dedup_key` (35, filterable, PR-EDMX
  [S]) is the look-up reference.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp

from gateway.model import Delivery, MessageKind, OutboxRecord, Outcome
from gateway.upstream.rest import transport_reason
from gateway.upstream.retry_policy import wait_for_interrupted_send
from gateway.upstream.sap_odata import (
    CsrfUnavailable,
    ODataClient,
    entity_of,
    error_text,
    odata_date,
    odata_string,
    results_of,
)
from gateway.workflow import PartLine, stock_receipt

if TYPE_CHECKING:
    from gateway.upstream.sap_pm import SapPmSink

TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
UNRESTRICTED = "01"  # InventoryStockType of unrestricted-use stock [T]
EXTERNAL_SYSTEM = "PLANTBRIDGE"  # PurReqnExternalSystemId


def _qty(value: float) -> str:
    """Edm.Decimal travels as a string in OData v2 JSON."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


class SapPartsSteps:
    """Sends the three parts steps for one SapPmSink (its clients, credentials, failures)."""

    def __init__(self, sink: SapPmSink) -> None:
        self._sink = sink
        self._cfg = sink.config.parts

    def _client(self, path: str) -> ODataClient:
        return self._sink.service_client(path)

    async def send(self, rec: OutboxRecord) -> Delivery:
        body = rec.message.body
        try:
            parts = [PartLine.model_validate(p) for p in body.get("parts") or []]
        except ValueError as exc:
            return Delivery(rec.id, Outcome.REJECTED, reason=f"parts list unreadable: {exc}")
        if not parts or not body.get("request_ref") or not body.get("dedup_key"):
            return Delivery(rec.id, Outcome.REJECTED, reason=(
                "a parts step needs parts, request_ref and dedup_key in its body"))
        kind = rec.message.kind
        if kind is MessageKind.PARTS_STOCK:
            return await self._stock(rec, parts)
        held = wait_for_interrupted_send(rec, self._sink.config.unclear_retry_after_seconds,
                                         time.time())
        if held is not None:
            return held
        if kind is MessageKind.PARTS_RESERVATION:
            return await self._reservation(rec, parts)
        return await self._requisition(rec)

    # --- stock ----------------------------------------------------------------------------

    async def _stock(self, rec: OutboxRecord, parts: Sequence[PartLine]) -> Delivery:
        levels: dict[str, float] = {}
        client = self._client(self._cfg.stock_service_path)
        for part in parts:
            if part.place in levels:
                continue
            answer = await client.read("A_MatlStkInAcctMod", {
                "$filter": (f"Material eq {odata_string(part.material)} and Plant eq "
                            f"{odata_string(part.plant)} and StorageLocation eq "
                            f"{odata_string(part.storage_location)} and InventoryStockType eq "
                            f"'{UNRESTRICTED}' and InventorySpecialStockType eq ''"),
                "$select": "MatlWrhsStkQtyInMatlBaseUnit", "$format": "json"})
            if not answer.ok:
                return self._sink.failure(rec.id, answer, f"stock of {part.place}")
            rows = results_of(answer.body)
            if rows is None:
                return Delivery(rec.id, Outcome.RETRY,
                                reason=f"stock of {part.place}: unreadable body")
            try:
                levels[part.place] = sum(float(r.get("MatlWrhsStkQtyInMatlBaseUnit") or 0)
                                         for r in rows)
            except (TypeError, ValueError):
                return Delivery(rec.id, Outcome.RETRY, reason=(
                    f"stock of {part.place}: a quantity is not a number"))
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=stock_receipt(levels))

    # --- reservation ----------------------------------------------------------------------

    async def _reservation(self, rec: OutboxRecord, parts: Sequence[PartLine]) -> Delivery:
        body = rec.message.body
        if not self._cfg.cost_center:
            return Delivery(rec.id, Outcome.REJECTED, reason=(
                f"parts.cost_center is not set for upstream {self._sink.name!r}: a reservation "
                "(movement type 201) needs the cost center it is booked on"))
        ref = f"{body['dedup_key']} N{body['request_ref']}"[:50]
        client = self._client(self._cfg.reservation_service_path)
        found = await self._look_up(rec.id, client, "A_ReservationDocumentItem",
                                    f"ReservationItemText eq {odata_string(ref)}",
                                    "Reservation", f"reservation {ref}")
        if found is not None:
            return found
        need = (datetime.now(UTC) + timedelta(days=self._cfg.lead_time_days))
        header: dict[str, Any] = {
            "GoodsMovementType": self._cfg.goods_movement_type,
            "CostCenter": self._cfg.cost_center,
            "ReservationDate": odata_date(datetime.now(UTC)),
            "to_ReservationDocumentItem": [{
                "Product": p.material, "Plant": p.plant, "StorageLocation": p.storage_location,
                "ResvnItmRequiredQtyInEntryUnit": _qty(p.quantity), "EntryUnit": p.unit,
                "MatlCompRequirementDate": odata_date(need), "ReservationItemText": ref,
            } for p in parts],
        }
        return await self._create(rec.id, client, "A_ReservationDocumentHeader", header,
                                  "Reservation", f"reservation {ref}")

    # --- requisition ----------------------------------------------------------------------

    async def _requisition(self, rec: OutboxRecord) -> Delivery:
        body = rec.message.body
        key = str(body["dedup_key"])
        order: list[Mapping[str, Any]] = list(body.get("order") or [])
        if not order:
            return Delivery(rec.id, Outcome.REJECTED, reason="requisition step without parts")
        client = self._client(self._cfg.requisition_service_path)
        found = await self._look_up(rec.id, client, "A_PurchaseRequisitionItem",
                                    f"PurReqnExternalReference eq {odata_string(key)}",
                                    "PurchaseRequisition", f"requisition {key}")
        if found is not None:
            return found
        need = odata_date(datetime.now(UTC) + timedelta(days=self._cfg.lead_time_days))
        items = []
        for i, raw in enumerate(order, start=1):
            part = PartLine.model_validate({k: v for k, v in raw.items()
                                            if k in PartLine.model_fields})
            item: dict[str, Any] = {
                "PurchaseRequisitionItem": str(10 * i), "Material": part.material,
                "Plant": part.plant, "StorageLocation": part.storage_location,
                "RequestedQuantity": _qty(float(raw["order_quantity"])), "BaseUnit": part.unit,
                "DeliveryDate": need, "PurReqnExternalReference": key,
                "PurReqnItemExternalReference": str(10 * i),
                "PurReqnExternalSystemId": EXTERNAL_SYSTEM,
                "PurchaseRequisitionItemText": (f"notification {body['request_ref']} "
                                                f"reservation {body.get('reservation', '')}")[:40],
            }
            if self._cfg.purchasing_group:
                item["PurchasingGroup"] = self._cfg.purchasing_group
            items.append(item)
        header = {"PurchaseRequisitionType": self._cfg.requisition_type,
                  "PurReqnDescription": f"Parts for notification {body['request_ref']}"[:40],
                  "to_PurchaseReqnItem": items}
        return await self._create(rec.id, client, "A_PurchaseRequisitionHeader", header,
                                  "PurchaseRequisition", f"requisition {key}")

    # --- shared: look up, create ----------------------------------------------------------

    async def _look_up(self, record_id: int, client: ODataClient, entity_set: str,
                       where: str, number_field: str, what: str) -> Delivery | None:
        """ACCEPTED with the document that already carries our reference, None if none."""
        answer = await client.read(entity_set, {"$filter": where, "$select": number_field,
                                                "$format": "json"})
        if not answer.ok:
            return self._sink.failure(record_id, answer, f"look-up of {what}")
        rows = results_of(answer.body)
        if rows is None:
            return Delivery(record_id, Outcome.RETRY, reason=(
                f"look-up of {what}: unreadable body; not creating blind"))
        numbers = sorted({str(r[number_field]) for r in rows if r.get(number_field)})
        if not numbers:
            return None
        return Delivery(record_id, Outcome.ACCEPTED, receipt=numbers[0], reason=(
            f"{what} exists already as {numbers[0]} (made by an earlier attempt)"))

    async def _create(self, record_id: int, client: ODataClient, entity_set: str,
                      payload: Mapping[str, Any], number_field: str, what: str) -> Delivery:
        wait = self._sink.config.unclear_retry_after_seconds
        unclear = (f"; the create may still commit: looking it up again in {wait:g} s "
                   "before any new create")
        try:
            answer = await client.write("POST", entity_set, payload=payload)
        except (aiohttp.ClientConnectorError, CsrfUnavailable):
            raise  # nothing was sent: a plain retry
        except TRANSPORT_ERRORS as exc:
            return Delivery(record_id, Outcome.RETRY, retry_after_seconds=wait,
                            reason=f"create of {what}: {transport_reason(exc)}{unclear}")
        if answer.status == 504:
            return Delivery(record_id, Outcome.RETRY, retry_after_seconds=wait,
                            reason=f"create of {what}: HTTP 504 {error_text(answer)}{unclear}")
        if not answer.ok:
            return self._sink.failure(record_id, answer, f"create of {what}")
        number = (entity_of(answer.body) or {}).get(number_field)
        if not isinstance(number, str) or not number:
            return Delivery(record_id, Outcome.RETRY, reason=(
                f"create of {what} answered HTTP {answer.status} without {number_field}; "
                "the next attempt looks it up before creating again"))
        return Delivery(record_id, Outcome.ACCEPTED, receipt=number)
