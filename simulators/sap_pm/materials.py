"""The SAP simulator's materials side: stock, reservations and purchase requisitions.

Three OData v2 services, shaped after the specs the shared doc cites (UPSTREAM-WORKFLOW-APIS §3),
never after the gateway's adapter:

* API_MATERIAL_STOCK_SRV, `A_MatlStkInAcctMod` (read only) [S]: one row per material, plant,
  storage location, batch and stock type; the quantity is `MatlWrhsStkQtyInMatlBaseUnit`, a
  decimal string. Stock types: '01' unrestricted is [T]; the simulator also holds blocked stock
  ('07', [U]) so that a client that does not filter on the stock type counts too much.
* API_RESERVATION_DOCUMENT_SRV [S]: `POST A_ReservationDocumentHeader` with the items deep-inserted
  under `to_ReservationDocumentItem`; `GET A_ReservationDocumentItem` with `$filter`. Whether
  `ReservationItemText` is filterable on a real system is not verified [U]: here it is.
* API_PURCHASEREQ_PROCESS_SRV [S]: `POST A_PurchaseRequisitionHeader` with `to_PurchaseReqnItem`;
  `GET A_PurchaseRequisitionItem` with `$filter` (`PurReqnExternalReference` filterable [S]).

There is NO de-duplication here: two identical creates make two documents, as on SAP. What keeps
the gateway from doubling them is its own look-up. Unknown properties are refused (400), as an
SAP Gateway does for properties not in the entity type.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from simulators.sap_pm.odata import ODataError, parse_filter, parse_select, project

STOCK_PATH = "/sap/opu/odata/sap/API_MATERIAL_STOCK_SRV"
RESERVATION_PATH = "/sap/opu/odata/sap/API_RESERVATION_DOCUMENT_SRV"
REQUISITION_PATH = "/sap/opu/odata/sap/API_PURCHASEREQ_PROCESS_SRV"
PATHS = (STOCK_PATH, RESERVATION_PATH, REQUISITION_PATH)

STOCK_FIELDS = ("Material", "Plant", "StorageLocation", "Batch", "Supplier", "Customer",
                "WBSElementInternalID", "SDDocument", "SDDocumentItem",
                "InventorySpecialStockType", "InventoryStockType", "MaterialBaseUnit",
                "MatlWrhsStkQtyInMatlBaseUnit")
RESV_HEADER_FIELDS = {"Reservation", "OrderID", "GoodsMovementType", "CostCenter",
                      "GoodsRecipientName", "ReservationDate", "WBSElement", "ControllingArea",
                      "AssetNumber", "IssuingOrReceivingPlant", "IssuingOrReceivingStorageLoc",
                      "to_ReservationDocumentItem"}
RESV_ITEM_FIELDS = ("Reservation", "ReservationItem", "RecordType", "Product", "Plant",
                    "StorageLocation", "Batch", "ResvnItmRequiredQtyInEntryUnit", "EntryUnit",
                    "MatlCompRequirementDate", "GoodsMovementType", "GLAccount",
                    "ReservationItemText", "UnloadingPointName", "GoodsRecipientName")
PR_HEADER_FIELDS = {"PurchaseRequisition", "PurchaseRequisitionType", "PurReqnDescription",
                    "PurReqnDoOnlyValidation", "to_PurchaseReqnItem"}
PR_ITEM_FIELDS = ("PurchaseRequisition", "PurchaseRequisitionItem", "Material", "Plant",
                  "RequestedQuantity", "BaseUnit", "DeliveryDate", "PurchasingGroup",
                  "PurchasingOrganization", "AccountAssignmentCategory", "MaterialGroup",
                  "StorageLocation", "RequisitionerName", "PurchaseRequisitionItemText",
                  "PurReqnExternalReference", "PurReqnItemExternalReference",
                  "PurReqnExternalSystemId")
TEXT_LIMITS = {"ReservationItemText": 50, "UnloadingPointName": 25, "GoodsRecipientName": 12,
               "OrderID": 12, "PurReqnExternalReference": 35, "PurReqnItemExternalReference": 10,
               "PurReqnExternalSystemId": 60, "PurchaseRequisitionItemText": 40,
               "PurReqnDescription": 40, "Product": 40, "Material": 40, "Plant": 4,
               "StorageLocation": 4, "CostCenter": 10, "GoodsMovementType": 3}
FIRST_RESERVATION = 1000000
FIRST_REQUISITION = 10000000


def _bad(message: str, prop: str = "") -> ODataError:
    return ODataError(400, "/IWBEP/CM_MGW_RT/002", message,
                      [{"code": "/IWBEP/CM_MGW_RT/002", "message": message, "target": prop,
                        "severity": "error"}])


def _decimal(value: Any, prop: str) -> float:
    """Edm.Decimal comes as a string in OData v2 JSON; a JSON number is refused, as SAP does."""
    if not isinstance(value, str):
        raise _bad(f"Property '{prop}' must be a decimal string, not {value!r}", prop)
    try:
        number = float(value)
    except ValueError:
        raise _bad(f"Property '{prop}' has an invalid decimal {value!r}", prop) from None
    if number <= 0:
        raise _bad(f"Property '{prop}' must be positive", prop)
    return number


def _check(data: Mapping[str, Any], allowed: Any, what: str) -> None:
    for name, value in data.items():
        if name not in allowed:
            raise _bad(f"Property '{name}' is invalid for {what}", name)
        limit = TEXT_LIMITS.get(name)
        if limit is not None and isinstance(value, str) and len(value) > limit:
            raise _bad(f"Property '{name}' is longer than {limit} characters", name)


def _items(data: Mapping[str, Any], nav: str) -> list[Mapping[str, Any]]:
    raw = data.get(nav)
    if isinstance(raw, Mapping):  # {"results": [...]} is the other v2 spelling
        raw = raw.get("results")
    if not isinstance(raw, list) or not raw or not all(isinstance(i, Mapping) for i in raw):
        raise _bad(f"'{nav}' must list at least one item (deep insert)", nav)
    return raw


class Hold(enum.StrEnum):
    """A one-shot gate on one entity set, for crash trials: the request waits (before or after
    it commits) until `release()`, or its answer is lost after the commit."""

    BEFORE = "before"
    AFTER = "after"
    DROP = "drop"


@dataclass
class Materials:
    """Stock rows, reservation items and requisition items; `created` counts every create."""

    stock: list[dict[str, Any]] = field(default_factory=list)
    reservations: list[dict[str, Any]] = field(default_factory=list)  # one entry per item
    requisitions: list[dict[str, Any]] = field(default_factory=list)  # one entry per item
    created: dict[str, int] = field(default_factory=lambda: {"reservation": 0,
                                                             "requisition": 0})
    stock_reads: int = 0
    holds: dict[str, Hold] = field(default_factory=dict)  # "/A_...Header" -> one-shot hold
    held: int = 0  # requests waiting at a hold now
    _gate: asyncio.Event = field(default_factory=asyncio.Event)

    def hold(self, entity_set: str, mode: Hold | str) -> None:
        """The next request to `entity_set` ("A_ReservationDocumentHeader") meets `mode`."""
        self._gate.clear()
        self.holds["/" + entity_set.lstrip("/")] = Hold(mode)

    def release(self) -> None:
        self._gate.set()

    async def wait_at_gate(self, limit_seconds: float = 60.0) -> None:
        self.held += 1
        try:
            await asyncio.wait_for(self._gate.wait(), limit_seconds)
        except TimeoutError:
            pass
        finally:
            self.held -= 1

    def set_stock(self, material: str, plant: str, storage_location: str, unrestricted: float,
                  *, blocked: float = 0.0, unit: str = "EA") -> None:
        """Replace the stock of one material at one place: unrestricted (type '01') in two
        batches, plus blocked stock (type '07')."""
        self.stock = [s for s in self.stock if (s["Material"], s["Plant"], s["StorageLocation"])
                      != (material, plant, storage_location)]
        half = unrestricted / 2
        for batch, qty, kind in (("B1", half, "01"), ("B2", unrestricted - half, "01"),
                                 ("B3", blocked, "07")):
            self.stock.append({
                "Material": material, "Plant": plant, "StorageLocation": storage_location,
                "Batch": batch, "Supplier": "", "Customer": "", "WBSElementInternalID": "",
                "SDDocument": "", "SDDocumentItem": "", "InventorySpecialStockType": "",
                "InventoryStockType": kind, "MaterialBaseUnit": unit,
                "MatlWrhsStkQtyInMatlBaseUnit": f"{qty:.3f}"})

    def reservation_numbers(self) -> list[str]:
        return sorted({r["Reservation"] for r in self.reservations})

    def requisition_numbers(self) -> list[str]:
        return sorted({r["PurchaseRequisition"] for r in self.requisitions})

    # --- HTTP -------------------------------------------------------------------------------

    def answer(self, service: str, tail: str, method: str, query: Mapping[str, str],
               payload: Mapping[str, Any] | None, base: str) -> tuple[int, Any]:
        """(status, `d` document) of a request to one of the three services."""
        if tail in ("", "/") and method == "GET":
            names = {STOCK_PATH: ["A_MaterialStock", "A_MatlStkInAcctMod"],
                     RESERVATION_PATH: ["A_ReservationDocumentHeader",
                                        "A_ReservationDocumentItem"],
                     REQUISITION_PATH: ["A_PurchaseRequisitionHeader",
                                        "A_PurchaseRequisitionItem"]}[service]
            return 200, {"EntitySets": names}
        route = {(STOCK_PATH, "/A_MatlStkInAcctMod", "GET"): "stock",
                 (RESERVATION_PATH, "/A_ReservationDocumentItem", "GET"): "resv_items",
                 (RESERVATION_PATH, "/A_ReservationDocumentHeader", "POST"): "resv_create",
                 (REQUISITION_PATH, "/A_PurchaseRequisitionItem", "GET"): "pr_items",
                 (REQUISITION_PATH, "/A_PurchaseRequisitionHeader", "POST"): "pr_create",
                 }.get((service, tail, method))
        if route == "stock":
            self.stock_reads += 1
            return 200, self._list(self.stock, STOCK_FIELDS, query, base + tail)
        if route == "resv_items":
            return 200, self._list(self.reservations, RESV_ITEM_FIELDS, query, base + tail)
        if route == "pr_items":
            return 200, self._list(self.requisitions, PR_ITEM_FIELDS, query, base + tail)
        if route == "resv_create":
            return 201, self._reserve(payload or {})
        if route == "pr_create":
            return 201, self._requisition(payload or {})
        raise ODataError(404, "/IWBEP/CM_MGW_RT/021",
                         f"Resource not found for segment '{tail.lstrip('/')}' ({method})")

    @staticmethod
    def _list(rows: list[dict[str, Any]], fields: tuple[str, ...], query: Mapping[str, str],
              uri: str) -> dict[str, Any]:
        found = rows
        if "$filter" in query:
            pred = parse_filter(query["$filter"], fields)
            found = [r for r in rows if pred(r)]
        select = parse_select(query.get("$select"), fields)
        return {"results": [project({"__metadata": {"uri": f"{uri}({i})"}, **r}, select)
                            for i, r in enumerate(found)]}

    def _reserve(self, data: Mapping[str, Any]) -> dict[str, Any]:
        _check(data, RESV_HEADER_FIELDS, "A_ReservationDocumentHeaderType")
        if "Reservation" in data:
            raise _bad("Reservation is assigned by the system", "Reservation")
        if not data.get("GoodsMovementType"):
            raise _bad("Enter a movement type", "GoodsMovementType")
        if not (data.get("CostCenter") or data.get("OrderID")):
            raise _bad("Enter an account assignment (cost center or order)", "CostCenter")
        items = _items(data, "to_ReservationDocumentItem")
        number = str(FIRST_RESERVATION + self.created["reservation"])
        made = []
        for i, item in enumerate(items, start=1):
            _check(item, RESV_ITEM_FIELDS, "A_ReservationDocumentItemType")
            if not item.get("Product") or not item.get("Plant"):
                raise _bad("Enter a material and a plant", "Product")
            _decimal(item.get("ResvnItmRequiredQtyInEntryUnit"),
                     "ResvnItmRequiredQtyInEntryUnit")
            made.append({k: item.get(k, "") for k in RESV_ITEM_FIELDS} | {
                "Reservation": number, "ReservationItem": str(i), "RecordType": "",
                "GoodsMovementType": str(data["GoodsMovementType"])})
        self.created["reservation"] += 1
        self.reservations += made
        return {"Reservation": number, **{k: v for k, v in data.items() if k in
                                          RESV_HEADER_FIELDS and not k.startswith("to_")},
                "to_ReservationDocumentItem": {"results": made}}

    def _requisition(self, data: Mapping[str, Any]) -> dict[str, Any]:
        _check(data, PR_HEADER_FIELDS, "A_PurchaseRequisitionHeaderType")
        items = _items(data, "to_PurchaseReqnItem")
        number = str(FIRST_REQUISITION + self.created["requisition"])
        made = []
        for item in items:
            _check(item, PR_ITEM_FIELDS, "A_PurchaseRequisitionItemType")
            if not item.get("Material") or not item.get("Plant"):
                raise _bad("Enter a material and a plant", "Material")
            _decimal(item.get("RequestedQuantity"), "RequestedQuantity")
            made.append({k: item.get(k, "") for k in PR_ITEM_FIELDS}
                        | {"PurchaseRequisition": number})
        if data.get("PurReqnDoOnlyValidation") is True:  # simulate only (PR-OAS [S])
            return {"PurchaseRequisition": "", "to_PurchaseReqnItem": {"results": made}}
        self.created["requisition"] += 1
        self.requisitions += made
        return {"PurchaseRequisition": number,
                "PurchaseRequisitionType": data.get("PurchaseRequisitionType", "NB"),
                "to_PurchaseReqnItem": {"results": made}}
