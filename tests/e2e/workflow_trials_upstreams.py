"""The upstreams the workflow kill trials run against: SAP PM, the generic REST CMMS, Maximo.

Each says which request commits each step (the kill points) and counts, per trial asset, what
arrived at its simulator. Adding a step (say Maximo's parts chain) is two edits in its class:
a `Step(name, matcher)` in `steps` and its count in `arrived` (see MaximoTrials).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from simulators.cmms import CmmsSimulator
from simulators.cmms import api as cmms_api
from simulators.cmms.idempotency import StoredResponse
from simulators.maximo import MaximoSimulator
from simulators.maximo.tickets import restid_of
from simulators.sap_pm import SapPmSimulator
from tests.e2e.stack import API_KEY
from tests.e2e.workflow_trials import BEARING_PARTS, LOW_PART, Step, TrialUpstream
from tests.e2e.workflow_trials_gate import Matcher, RequestGate


def title(asset: str) -> str:
    return f"Bearing wear on {asset}"


def _route(path: str) -> str:
    return path.split("?", 1)[0]


def posts_to(suffix: str) -> Matcher:
    return lambda method, path, body: method == "POST" and _route(path).endswith(suffix)


def gets_from(suffix: str) -> Matcher:
    return lambda method, path, body: method == "GET" and _route(path).endswith(suffix)


# --- SAP PM --------------------------------------------------------------------------------


def _completion_of(number: str) -> Matcher:
    """The CompleteMaintNotification call of notification `number`."""
    completes = posts_to("/CompleteMaintNotification")
    key = f"MaintenanceNotification='{number}'"

    def match(method: str, path: str, body: bytes) -> bool:
        return completes(method, path, body) and key in path
    return match


def _sap_note(method: str, path: str, body: bytes) -> bool:
    return method in ("PATCH", "MERGE", "PUT") and b"[PlantBridge clear " in body


class SapTrials(TrialUpstream):
    """Notification, stock read, reservation, requisition, clear note, completion."""

    name = "sap"
    steps = (Step("request", posts_to("/MaintenanceNotification")),
             Step("stock", gets_from("/A_MatlStkInAcctMod")),
             Step("reservation", posts_to("/A_ReservationDocumentHeader")),
             Step("requisition", posts_to("/A_PurchaseRequisitionHeader")),
             Step("clear_note", _sap_note),
             Step("clear_complete", posts_to("/CompleteMaintNotification")))

    def __init__(self) -> None:
        self.sim: SapPmSimulator = SapPmSimulator(port=0, equipment=["4711"])

    async def start(self) -> None:
        await self.sim.start()
        self.sim.materials.set_stock("BRG-6205", "1010", "0001", 1)  # below 4: order
        self.sim.materials.set_stock("SEAL-40", "1010", "0001", 5)

    def upstream_config(self) -> str:
        return f"""
[[upstreams]]
type = "sap_pm"
name = "sap"
sap_client = "100"
base_url = "{self.sim.url}"
auth = {{ kind = "basic", user = "PB_COMM", password = {{ value = "secret" }} }}
total_timeout_seconds = 5
unclear_retry_after_seconds = {self.unclear_seconds}
[upstreams.parts]
cost_center = "4711-CC"
"""

    def _notifications(self, asset: str) -> list[dict[str, Any]]:
        return [n for n in self.sim.notifications if n.get("NotificationText") == title(asset)]

    def arrived(self, asset: str, gate: RequestGate) -> dict[str, int]:
        notifs = self._notifications(asset)
        m = self.sim.materials
        texts = {f"{n['MaintNotifExtReferenceNumber']} N{n['MaintenanceNotification']}"
                 for n in notifs}
        refs = {n["MaintNotifExtReferenceNumber"] for n in notifs}
        completes = sum(gate.committed(_completion_of(str(n["MaintenanceNotification"])))
                        for n in notifs)
        return {
            "notification": len(notifs),
            "reservation": len({r["Reservation"] for r in m.reservations
                                if r["ReservationItemText"] in texts}),
            "requisition": len({r["PurchaseRequisition"] for r in m.requisitions
                                if r["PurReqnExternalReference"] in refs}),
            "clear note": sum(str(n.get("MaintNotificationLongText", "")).count(
                f"[PlantBridge clear {n['MaintNotifExtReferenceNumber']}]") for n in notifs),
            "completion": completes}

    def wrong(self, asset: str) -> list[str]:
        [n] = self._notifications(asset)
        text = f"{n['MaintNotifExtReferenceNumber']} N{n['MaintenanceNotification']}"
        m = self.sim.materials
        items = sorted((r["Product"], float(r["ResvnItmRequiredQtyInEntryUnit"]), r["EntryUnit"])
                       for r in m.reservations if r["ReservationItemText"] == text)
        order = [(r["Material"], float(r["RequestedQuantity"])) for r in m.requisitions
                 if r["PurReqnExternalReference"] == n["MaintNotifExtReferenceNumber"]]
        said = [] if items == BEARING_PARTS else [f"reservation items {items}"]
        said += [] if order == [LOW_PART] else [f"requisition items {order}"]
        phase = str(n.get("NotifProcessingPhase"))
        return said + ([] if phase == "4" else [f"notification phase {phase}, not completed"])


# --- the generic REST CMMS -----------------------------------------------------------------


class PartsCmms(CmmsSimulator):
    """The CMMS simulator with the three calls of the REST parts chain (`[upstreams.workflow]`):
    GET stock, POST reservations, POST requisitions, the POSTs under the simulator's own
    Idempotency-Key handling like its requests."""

    STOCK = {"BRG-6205": 1.0, "SEAL-40": 5.0}

    def __init__(self) -> None:
        super().__init__(host="127.0.0.1", port=0, api_key=API_KEY)
        self.reservations: list[dict[str, Any]] = []
        self.requisitions: list[dict[str, Any]] = []

    def _add_routes(self, app: web.Application) -> None:
        super()._add_routes(app)
        app.router.add_get("/api/v1/stock", self._stock)
        app.router.add_post("/api/v1/reservations", self._reserve)
        app.router.add_post("/api/v1/requisitions", self._requisition)

    async def _stock(self, request: web.Request) -> web.StreamResponse:
        available = self.STOCK.get(request.query.get("material", ""))
        if available is None:
            return web.json_response({"error": "unknown material"}, status=404)
        return web.json_response({"available": available})

    async def _reserve(self, request: web.Request) -> web.StreamResponse:
        return await self._idempotent(request, self._keeper(self.reservations, "RES"))

    async def _requisition(self, request: web.Request) -> web.StreamResponse:
        return await self._idempotent(request, self._keeper(self.requisitions, "PR"))

    @staticmethod
    def _keeper(into: list[dict[str, Any]], prefix: str
                ) -> Callable[[web.Request, str, bytes], StoredResponse]:
        def keep(request: web.Request, key: str, body: bytes) -> StoredResponse:
            data = cmms_api.parse_json_object(body)
            if isinstance(data, StoredResponse):
                return data
            doc = {"id": f"{prefix}-{len(into) + 1}", "body": data}
            into.append(doc)
            return cmms_api.created({"id": doc["id"]}, f"{request.path}/{doc['id']}")
        return keep


class RestTrials(TrialUpstream):
    """Request, stock read, reservation, requisition, clear (a status update)."""

    name = "rest"
    steps = (Step("request", posts_to(cmms_api.REQUESTS_PATH)),
             Step("stock", gets_from("/api/v1/stock")),
             Step("reservation", posts_to("/api/v1/reservations")),
             Step("requisition", posts_to("/api/v1/requisitions")),
             Step("clear", posts_to("/status-updates")))

    def __init__(self) -> None:
        self.sim: PartsCmms = PartsCmms()

    async def start(self) -> None:
        await self.sim.start()

    def upstream_config(self) -> str:
        return f"""
[[upstreams]]
type = "rest"
name = "cmms"
base_url = "{self.sim.url}"
auth = {{ kind = "bearer", token = {{ value = "{API_KEY}" }} }}
connect_timeout_seconds = 1
total_timeout_seconds = 5
[upstreams.workflow]
stock_path = "/api/v1/stock"
reservation_path = "/api/v1/reservations"
requisition_path = "/api/v1/requisitions"
"""

    def arrived(self, asset: str, gate: RequestGate) -> dict[str, int]:
        reqs = [r for r in self.sim.requests if r["body"].get("asset") == asset]
        ids = {r["id"] for r in reqs}
        return {"request": len(reqs),
                "reservation": sum(1 for r in self.sim.reservations
                                   if r["body"].get("asset") == asset),
                "requisition": sum(1 for r in self.sim.requisitions
                                   if r["body"].get("asset") == asset),
                "clear": sum(1 for u in self.sim.status_updates if u["request_id"] in ids)}

    def wrong(self, asset: str) -> list[str]:
        [req] = [r for r in self.sim.requests if r["body"].get("asset") == asset]
        [resv] = [r["body"] for r in self.sim.reservations if r["body"].get("asset") == asset]
        [pr] = [r["body"] for r in self.sim.requisitions if r["body"].get("asset") == asset]
        items = sorted((p["material"], float(p["quantity"]), p["unit"]) for p in resv["parts"])
        order = [(p["material"], float(p["order_quantity"])) for p in pr["order"]]
        said = [] if items == BEARING_PARTS else [f"reservation items {items}"]
        said += [] if order == [LOW_PART] else [f"requisition items {order}"]
        if resv.get("request_ref") != req["id"]:
            said.append(f"reservation for {resv.get('request_ref')}, not {req['id']}")
        if pr.get("reservation") != self._reservation_id(asset):
            said.append(f"requisition for reservation {pr.get('reservation')}")
        return said

    def _reservation_id(self, asset: str) -> str:
        return next(str(r["id"]) for r in self.sim.reservations
                    if r["body"].get("asset") == asset)


# --- Maximo ----------------------------------------------------------------------------------


def _sr_create(method: str, path: str, body: bytes) -> bool:
    return method == "POST" and _route(path).lower().endswith("/os/mxapisr")


def _sr_update(method: str, path: str, body: bytes) -> bool:
    return method == "PATCH" and "/os/mxapisr/" in _route(path).lower()


def _resolving(ticketid: str) -> Matcher:
    """An update of SR `ticketid` that sets it RESOLVED (what our clear does)."""
    member = f"/os/mxapisr/{restid_of(ticketid)}".lower()

    def match(method: str, path: str, body: bytes) -> bool:
        if not (_sr_update(method, path, body) and _route(path).lower().endswith(member)):
            return False
        try:
            change = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        return isinstance(change, dict) and change.get("status") == "RESOLVED"
    return match


class MaximoTrials(TrialUpstream):
    """Service request, stock read, reservations (one INVRESERVE per part), requisition, clear
    (resolved). The parts steps find each other by `requestnum` / `externalrefid` = the SR's
    external reference (gateway/upstream/maximo_parts.py)."""

    name = "maximo"
    steps = (Step("request", _sr_create),
             Step("stock", gets_from("/os/mxapiinventory")),
             Step("reservation", posts_to("/os/mxapiinvres")),
             Step("requisition", posts_to("/os/mxapipr")),
             Step("clear", _sr_update))

    def __init__(self) -> None:
        self.sim: MaximoSimulator = MaximoSimulator(port=0, api_key="k")

    async def start(self) -> None:
        await self.sim.start()
        self.sim.set_stock("BRG-6205", "CENTRAL", "BEDFORD", 1)  # below 4: order
        self.sim.set_stock("SEAL-40", "CENTRAL", "BEDFORD", 5)

    def upstream_config(self) -> str:
        return f"""
[[upstreams]]
type = "maximo"
name = "maximo"
base_url = "{self.sim.url}"
auth = {{ kind = "api_key", key = {{ value = "k" }} }}
siteid = "BEDFORD"
total_timeout_seconds = 5
unclear_retry_after_seconds = {self.unclear_seconds}
[upstreams.parts]
storerooms = {{ "0001" = "CENTRAL" }}
"""

    def _tickets(self, asset: str) -> list[dict[str, Any]]:
        return [t for t in self.sim.tickets if t.get("description") == title(asset)]

    def _refs(self, asset: str) -> set[str]:
        return {str(t.get("externalrecid")) for t in self._tickets(asset)}

    def arrived(self, asset: str, gate: RequestGate) -> dict[str, int]:
        tickets, refs = self._tickets(asset), self._refs(asset)
        updates = sum(gate.committed(_resolving(str(t["ticketid"]))) for t in tickets)
        # one reservation step = one INVRESERVE row per part: counted as rows per part below
        rows = [r for r in self.sim.reservations if r.get("requestnum") in refs]
        per_part = {str(r["itemnum"]): 0 for r in rows}
        for r in rows:
            per_part[str(r["itemnum"])] += 1
        return {"service request": len(tickets),
                "reservation": max(per_part.values(), default=0),
                "requisition": sum(1 for p in self.sim.requisitions
                                   if p.get("externalrefid") in refs),
                "clear": updates}

    def wrong(self, asset: str) -> list[str]:
        [t] = self._tickets(asset)
        ref = str(t.get("externalrecid"))
        status = str(t.get("status"))
        said = [] if status == "RESOLVED" else [f"SR {t['ticketid']} is {status}, not RESOLVED"]
        items = sorted((str(r["itemnum"]), float(r["reservedqty"])) for r in self.sim.reservations
                       if r.get("requestnum") == ref)
        if items != [(item, qty) for item, qty, _ in BEARING_PARTS]:
            said.append(f"reservation items {items}")
        order = [(str(line["itemnum"]), float(line["orderqty"]))
                 for p in self.sim.requisitions if p.get("externalrefid") == ref
                 for line in p.get("prline") or []]
        if order != [LOW_PART]:
            said.append(f"requisition items {order}")
        return said


UPSTREAMS: dict[str, Callable[[], TrialUpstream]] = {
    "sap": SapTrials, "rest": RestTrials, "maximo": MaximoTrials}
