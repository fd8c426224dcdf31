"""A Maximo Manage REST/JSON API simulator (aiohttp): `mxapisr` service requests.

What it reproduces (UPSTREAM-APIS.md §2, §7.2): `apikey` header or query parameter (or the 7.6
`maxauth` header), 401 with the `{"Error": {...}}` JSON (statusCode a string); POST 201 with
`Location` and a body only when a `properties` header asks for one; updates as `POST <member>`
+ `x-method-override: PATCH` (+ `patchtype: MERGE` for child arrays); `_rowstamp` optimistic
locking (If-Match or `_rowstamp` in the body) with 412 BMXAA8229W; the SR status lifecycle;
reportedpriority and asset validation; an `oslc.where`/`select`/`orderBy`/`pageSize` subset;
lean and namespaced JSON. NO dedup: a repeated POST creates another SR, as Maximo does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from simulators.httpsim import Handler, HttpSimulator
from simulators.httpsim import json_response as _json
from simulators.maximo import oslc
from simulators.maximo.assets import AssetStore
from simulators.maximo.bulk import BulkRendering, run_bulk
from simulators.maximo.faults import Fault, FaultMode, Faults
from simulators.maximo.records import RecordTable
from simulators.maximo.structures import DEMO_FAILURE_CODES, build_tables, seed
from simulators.maximo.tickets import (
    KNOWN,
    Domains,
    MaximoError,
    SrStore,
    not_authorized,
)

DEMO_ASSETS: Mapping[str, str] = {"PUMP-1": "BEDFORD", "PUMP-2": "BEDFORD", "FAN-1": "BEDFORD"}
OBJECT_STRUCTURES = ("mxapisr", "mxapiasset")  # and those of `tables` (structures.py)
FAULT = web.RequestKey("maximo_fault", Fault)


class MaximoSimulator(HttpSimulator):
    """`await sim.start()`; `sim.url`; `sim.tickets`; `sim.faults.set("rate_429", count=2)`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str = "test-key",
                 assets: Mapping[str, str] | None = DEMO_ASSETS,
                 priority_domain: Iterable[int] = (1, 2, 3, 4, 5), *,
                 api_root: str = "/maximo/api",
                 maxauth_users: Mapping[str, str] | None = None,
                 href_base: str | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 asset_store: AssetStore | None = None,
                 failure_codes: Mapping[str, Sequence[str]] | None = None) -> None:
        """`assets`: assetnum -> siteid (None accepts any asset). `maxauth_users`: user ->
        password accepted in a `maxauth` header (7.6 native authentication). `href_base`: the
        address Maximo believes it has (mxe.oslc.webappurl), used in hrefs and Location
        instead of the request's own; behind a proxy that is often an internal name.
        `asset_store`: what mxapiasset serves (default: the seeded site, or `assets`' sites
        when `assets` is not the demo set). `failure_codes`: failure class -> the problem
        codes below it (mxapifailurelist; default: structures.DEMO_FAILURE_CODES). The
        priority domain is also served as numeric domain TICKETPRIORITY; the demo site has
        storeroom CENTRAL with BRG-6205 (1) and SEAL-40 (10)."""
        super().__init__(host, port, ssl_context)
        self.api_key = api_key
        self.api_root = api_root.rstrip("/")
        self.maxauth_users = dict(maxauth_users or {})
        self.href_base = href_base.rstrip("/") if href_base else None
        self.store = SrStore(Domains(None if assets is None else dict(assets),
                                     frozenset(priority_domain)))
        self.faults: Faults = Faults()
        # work orders, inventory, reservations, requisitions (simulators/maximo/structures.py)
        self.tables: dict[str, RecordTable] = build_tables(
            None if assets is None else dict(assets))
        demo = assets is None or assets == DEMO_ASSETS
        seed(self.tables, priorities=self.store.domains.priorities,
             failure_codes=DEMO_FAILURE_CODES if failure_codes is None else failure_codes,
             demo_inventory=demo)
        self.assets = asset_store or (AssetStore() if assets is None or assets == DEMO_ASSETS
                                      else AssetStore.from_sites(assets))

    @property
    def tickets(self) -> list[dict[str, Any]]:
        """Every SR created, oldest first (duplicates included: there is no dedup)."""
        return self.store.tickets

    # --- what planners do in Maximo (test hooks: no HTTP, no faults) ---------------------

    def set_status(self, ticketid: str, status: str) -> None:
        """Move SR `ticketid` to `status` (QUEUED, INPROG, RESOLVED, CLOSED...)."""
        ticket = next((t for t in self.store.tickets if t["ticketid"] == ticketid), None)
        if ticket is None:
            raise KeyError(ticketid)
        ticket["status"] = status
        self.store.touch(ticket)

    def delete(self, ticketid: str) -> None:
        self.store.tickets[:] = [t for t in self.store.tickets if t["ticketid"] != ticketid]

    @property
    def work_orders(self) -> list[dict[str, Any]]:
        return self.tables["mxapiwodetail"].records

    @property
    def reservations(self) -> list[dict[str, Any]]:
        """Every INVRESERVE row made, oldest first (one per item and POST; no dedup)."""
        return self.tables["mxapiinvres"].records

    @property
    def requisitions(self) -> list[dict[str, Any]]:
        return self.tables["mxapipr"].records

    def plant_work_order(self, assetnum: str, siteid: str = "BEDFORD", status: str = "WAPPR",
                         failurecode: str | None = None, **more: Any) -> dict[str, Any]:
        """A work order a planner made (no validation); its `wonum` is generated."""
        fields: dict[str, Any] = {"assetnum": assetnum, "siteid": siteid, "status": status,
                                  "description": more.pop("description", f"Work on {assetnum}")}
        if failurecode is not None:
            fields["failurecode"] = failurecode
        return self.tables["mxapiwodetail"].plant(fields | more)

    def set_wo_status(self, wonum: str, status: str) -> None:
        table = self.tables["mxapiwodetail"]
        row = next((w for w in table.records if w["wonum"] == wonum), None)
        if row is None:
            raise KeyError(wonum)
        table.set_status(row, status)

    def set_stock(self, itemnum: str, location: str, siteid: str, curbal: float,
                  issueunit: str = "EACH") -> None:
        """The inventory balance of `itemnum` in storeroom `location` at `siteid`."""
        table = self.tables["mxapiinventory"]
        for row in table.records:
            if (row["itemnum"], row["location"], row["siteid"]) == (itemnum, location, siteid):
                row["curbal"] = curbal
                table.touch(row)
                return
        table.plant({"itemnum": itemnum, "location": location, "siteid": siteid,
                     "curbal": curbal, "issueunit": issueunit, "itemsetid": "SET1"})

    # --- app -----------------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        coll = self.api_root + "/os/{os}"
        app.router.add_get(coll, self._query)
        app.router.add_post(coll, self._create)
        app.router.add_get(coll + "/{restid}", self._get_member)
        app.router.add_post(coll + "/{restid}", self._post_member)

    def _counter_key(self, request: web.Request) -> tuple[str, str]:
        """The method as overridden; the route as "/os/mxapisr" or "/os/mxapisr/{id}"."""
        os_name = request.match_info.get("os", "?")
        member = "/{id}" if "restid" in request.match_info else ""
        return (request.headers.get("x-method-override", request.method).upper(),
                f"/os/{os_name}{member}")

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """What sits in front of the API: faults and authentication."""
        write = request.method == "POST"
        fault = self.faults.take(write=write,
                                 member_write=write and "restid" in request.match_info)
        if fault is not None:
            if fault.mode in (FaultMode.ERROR_5XX, FaultMode.RATE_429):
                status = 429 if fault.mode is FaultMode.RATE_429 else fault.status
                resp = self._error(request, MaximoError(status, "BMXAA0000E",
                                                        f"simulated HTTP {status}"))
                if fault.retry_after is not None:
                    resp.headers["Retry-After"] = fault.retry_after
                return resp
            if fault.mode is FaultMode.SLOW:
                await request.read()  # the request arrived whole; the server is what is slow
                await asyncio.sleep(fault.delay_seconds)
            request[FAULT] = fault
        if not self._authorised(request):
            return self._error(request, not_authorized())
        structure = request.match_info.get("os", "").lower()
        if structure not in OBJECT_STRUCTURES and structure not in self.tables:
            return self._error(request, MaximoError(
                404, "BMXAA8714E", f"The object structure {request.match_info.get('os')} "
                                   "was not found."))
        if request.match_info.get("os", "").lower() == "mxapiasset":
            if request.method != "GET" or "restid" in request.match_info:
                return self._error(request, MaximoError(
                    400, "BMXAA9549E", "the simulator's mxapiasset answers queries only"))
            handler = self._query_assets
        try:
            return await handler(request)
        except MaximoError as exc:
            return self._error(request, exc)
        except oslc.QuerySyntaxError as exc:
            return self._error(request, MaximoError(400, "BMXAA8725E", str(exc)))

    def _authorised(self, request: web.Request) -> bool:
        key = request.headers.get("apikey") or request.query.get("apikey")
        if key is not None:
            return key == self.api_key
        maxauth = request.headers.get("maxauth")
        if maxauth is not None and self.maxauth_users:
            try:
                user, _, password = base64.b64decode(maxauth, validate=True).decode().partition(
                    ":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return self.maxauth_users.get(user) == password
        return False

    def _error(self, request: web.Request, exc: MaximoError) -> web.Response:
        return _json(self._error_json(request, exc), exc.status)

    def _error_json(self, request: web.Request, exc: MaximoError) -> dict[str, Any]:
        """With `batcherror: 1`, every attribute error is listed in `attrerrors`."""
        base = f"{request.url.origin()}{self.api_root}/error/messages"
        return exc.as_json(base, batch=request.headers.get("batcherror") == "1")

    def _drop_if_faulted(self, request: web.Request) -> web.Response | None:
        fault = request.get(FAULT)
        if fault is None or fault.mode is not FaultMode.DROP_AFTER_COMMIT:
            return None
        return self.drop(request)

    # --- rendering -----------------------------------------------------------------------

    def _lean(self, request: web.Request) -> bool:
        """/maximo/api answers lean JSON by default, /maximo/oslc namespaced JSON."""
        given = request.query.get("lean")
        if given is not None:
            return given == "1"
        return not self.api_root.endswith("/oslc")

    def _store(self, request: web.Request) -> SrStore | RecordTable:
        """The table of the object structure the request names (mxapisr: the SRs)."""
        return self.tables.get(request.match_info.get("os", "").lower()) or self.store

    def _href(self, request: web.Request, ticket: Mapping[str, Any]) -> str:
        origin = self.href_base or str(request.url.origin())
        restid = self._store(request).restid(ticket)
        return f"{origin}{self.api_root}/os/{request.match_info['os']}/{restid}"

    def _view(self, request: web.Request, ticket: Mapping[str, Any],
              select: list[oslc.Selected] | None) -> dict[str, Any]:
        out = oslc.project(ticket, select)
        out["href"] = self._href(request, ticket)
        out["_rowstamp"] = ticket["_rowstamp"]
        return out if self._lean(request) else oslc.namespaced(out)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            doc = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise MaximoError(400, "BMXAA1470E", f"The JSON body cannot be parsed: {exc}") from exc
        if not isinstance(doc, dict):
            raise MaximoError(400, "BMXAA1470E", "The JSON body must be an object.")
        if not self._lean(request):
            doc = {k.split(":", 1)[-1]: v for k, v in doc.items()}
        return doc

    # --- handlers ------------------------------------------------------------------------

    async def _query(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        store = self._store(request)
        known = KNOWN if isinstance(store, SrStore) else store.spec.known
        conds = oslc.parse_where(q.get("oslc.where", ""), known.__contains__) if q.get(
            "oslc.where", "").strip() else []
        select = oslc.parse_select(q["oslc.select"]) if "oslc.select" in q else []
        found = [t for t in store.records if all(c.matches(t) for c in conds)]
        found = oslc.sort_records(found, oslc.parse_order(q.get("oslc.orderBy", "")))
        size = oslc.positive_int(q.get("oslc.pageSize"), "oslc.pageSize") or max(len(found), 1)
        page = oslc.positive_int(q.get("pageno"), "pageno") or 1
        chunk = found[(page - 1) * size: page * size]
        info: dict[str, Any] = {"href": str(request.url), "pagenum": page}
        if page * size < len(found):
            info["nextPage"] = {"href": str(request.url.update_query(pageno=str(page + 1)))}
        if page > 1:
            info["previousPage"] = {"href": str(request.url.update_query(pageno=str(page - 1)))}
        if q.get("collectioncount") == "1":
            info["totalCount"] = len(found)
            info["totalPages"] = max(1, -(-len(found) // size))
        members = [self._view(request, t, select) if select != [] else
                   {"href": self._href(request, t)} for t in chunk]
        if self._lean(request):
            return _json({"member": members, "href": str(request.url), "responseInfo": info})
        return _json({"rdfs:member": [oslc.namespaced(m) for m in members],
                      "rdf:about": str(request.url), "oslc:responseInfo": info})

    async def _query_assets(self, request: web.Request) -> web.StreamResponse:
        found = self.assets.query(request.query.get("oslc.where", ""),
                                  request.query.get("oslc.select"))
        info = {"href": str(request.url), "pagenum": 1}
        if self._lean(request):
            return _json({"member": found, "href": str(request.url), "responseInfo": info})
        return _json({"rdfs:member": [oslc.namespaced(m) for m in found],
                      "rdf:about": str(request.url), "oslc:responseInfo": info})

    async def _create(self, request: web.Request) -> web.StreamResponse:
        override = request.headers.get("x-method-override")
        store = self._store(request)
        if override is not None and override.upper() == "BULK" and isinstance(store, SrStore):
            return await self._bulk(request)
        if override is not None:
            raise MaximoError(400, "BMXAA9549E", f"x-method-override {override} on the "
                                                 "collection is not supported by the simulator")
        ticket = store.create(await self._body(request))
        dropped = self._drop_if_faulted(request)
        if dropped is not None:
            return dropped
        href = self._href(request, ticket)
        props = request.headers.get("properties")
        if props is None:
            return web.Response(status=201, headers={"Location": href})
        resp = _json(self._view(request, ticket, oslc.parse_select(props)), 201)
        resp.headers["Location"] = href
        return resp

    async def _bulk(self, request: web.Request) -> web.StreamResponse:
        try:
            items = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise MaximoError(400, "BMXAA1470E", f"The JSON body cannot be parsed: {exc}") from exc
        props = request.headers.get("properties")
        select = None if props is None else oslc.parse_select(props)

        def view(ticket: dict[str, Any]) -> dict[str, Any]:
            if props is None:
                return {"href": self._href(request, ticket)}
            return self._view(request, ticket, select)

        answer = run_bulk(self.store, items,
                          BulkRendering(view, lambda exc: self._error_json(request, exc)))
        return self._drop_if_faulted(request) or _json(answer)

    def _member(self, request: web.Request) -> dict[str, Any]:
        ticket = self._store(request).by_restid(request.match_info["restid"])
        if ticket is None:
            raise MaximoError(404, "BMXAA8727E", f"The OSLC resource {request.match_info['os']}"
                                                 f" with the ID {request.match_info['restid']} "
                                                 "was not found as it does not exist in the "
                                                 "system.")
        return ticket

    async def _get_member(self, request: web.Request) -> web.StreamResponse:
        ticket = self._member(request)
        select = oslc.parse_select(request.query.get("oslc.select", "*"))
        resp = _json(self._view(request, ticket, select))
        resp.headers["ETag"] = ticket["_rowstamp"]
        return resp

    async def _post_member(self, request: web.Request) -> web.StreamResponse:
        ticket = self._member(request)
        override = (request.headers.get("x-method-override") or "").upper()
        if override == "DELETE":
            self._store(request).records.remove(ticket)
            return self._drop_if_faulted(request) or web.Response(status=204)
        if override != "PATCH":
            raise MaximoError(400, "BMXAA9549E", "POST on a member needs x-method-override: "
                                                 "PATCH (or DELETE)")
        fault = request.get(FAULT)
        if fault is not None and fault.mode is FaultMode.CONFLICT_412:
            self._store(request).touch(ticket)  # another user saved it a moment ago
        if_match = request.headers.get("if-match")
        self._store(request).update(ticket, await self._body(request),
                          merge=request.headers.get("patchtype") == "MERGE",  # case-sensitive
                          expected_rowstamp=None if if_match is None else if_match.strip('"'))
        dropped = self._drop_if_faulted(request)
        if dropped is not None:
            return dropped
        props = request.headers.get("properties")
        if props is None:
            return web.Response(status=204)
        resp = _json(self._view(request, ticket, oslc.parse_select(props)))
        resp.headers["ETag"] = ticket["_rowstamp"]
        return resp

    # --- control (no auth, no faults) ----------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"tickets": self.store.tickets, "faults": self.faults.as_json(),
                "counters": self.counters("route")}

