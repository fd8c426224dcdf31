"""An SAP S/4HANA PM OData v2 service (API_MAINTNOTIFICATION) in aiohttp, with faults.

What sits in front of the service, in order: fault injection, `sap-client`, Basic auth (or a
live session cookie), then the CSRF check of modifying requests: the token must match the one
issued to the session named by the `SAP_SESSIONID_<SID>_<client>` cookie, and sessions end after
`csrf_ttl_seconds` without use. Data lives on the simulator object: `go_down()` / `come_up()`
keep it and the port.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import secrets
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from simulators.httpsim import HttpSimulator
from simulators.sap_pm.domains import ValueHelps
from simulators.sap_pm.faults import WRITE_METHODS, Fault, FaultMode, Faults
from simulators.sap_pm.masterdata import EQUIPMENT_PATH, FLOC_PATH, MasterData
from simulators.sap_pm.materials import PATHS as MATERIAL_PATHS
from simulators.sap_pm.materials import Hold, Materials
from simulators.sap_pm.notifications import (
    PHASE_COMPLETED,
    PHASE_IN_PROCESS,
    PROPERTIES,
    NotificationStore,
)
from simulators.sap_pm.oauth import TOKEN_PATH, TokenIssuer
from simulators.sap_pm.odata import (
    JSON,
    ODataError,
    error_body,
    non_negative,
    parse_filter,
    parse_key_literal,
    parse_select,
    project,
)

SERVICE_PATH = "/sap/opu/odata/sap/API_MAINTNOTIFICATION"
KEY_RE = re.compile(r"^/MaintenanceNotification\((.*)\)$")
ACTIONS = {"/CompleteMaintNotification": PHASE_COMPLETED,
           "/SetMaintNotifToInProcess": PHASE_IN_PROCESS}
DEFAULT_EQUIPMENT = {"210100094": "EAMS_EQUI", "210100095": "EAMS_EQUI",
                     "1010-CWS-WCS-CWCP1": "EAMS_FL"}
METADATA = (b'<?xml version="1.0" encoding="utf-8"?><edmx:Edmx Version="1.0" '
            b'xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx"><edmx:DataServices>'
            b'<Schema Namespace="API_MAINTNOTIFICATION" xmlns="http://schemas.microsoft.com/'
            b'ado/2008/09/edm"/></edmx:DataServices></edmx:Edmx>')


@dataclass
class _Session:
    user: str
    token: str
    expires_at: float


def _json(status: int, doc: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type=JSON,
                        headers=headers)


def _error(exc: ODataError) -> web.Response:
    return web.Response(status=exc.status, body=exc.body(), content_type=JSON)


class SapPmSimulator(HttpSimulator):
    """`await sim.start()`; `sim.url`; `sim.faults.set("drop_after_commit", count=1)`;
    `sim.notifications`; `await sim.stop()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, user: str = "PB_COMM",
                 password: str = "secret", sap_client: str = "100",
                 equipment: Mapping[str, str] | Iterable[str] | None = None,
                 csrf_ttl_seconds: float = 1800.0, *, system_id: str = "S4H",
                 priorities: Iterable[str] = ("1", "2", "3", "4"),
                 require_if_match: bool = False, ssl_context: ssl.SSLContext | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 oauth_clients: Mapping[str, str] | None = None,
                 token_lifetime_seconds: int = 3600,
                 master_data: MasterData | None = None) -> None:
        """`equipment`: technical objects in external form, to their kind (EAMS_EQUI or
        EAMS_FL); a plain list means equipment. `oauth_clients`: client id -> secret that the
        token endpoint accepts (None: no OAuth2). `master_data`: what API_EQUIPMENT and
        API_FUNCTIONALLOCATION hold (default: the simulator's seeded plant)."""
        super().__init__(host, port, ssl_context)
        self.user = user
        self.password = password
        self.sap_client = sap_client
        self.system_id = system_id
        self.csrf_ttl_seconds = csrf_ttl_seconds
        self.require_if_match = require_if_match  # [U] whether the real service enforces ETags
        self._clock = clock
        objects = (DEFAULT_EQUIPMENT if equipment is None else equipment
                   if isinstance(equipment, Mapping) else dict.fromkeys(equipment, "EAMS_EQUI"))
        self.store = NotificationStore(objects, priorities)
        self.value_helps = ValueHelps(self.store.priorities)  # priorities, catalog codes
        self.faults: Faults = Faults()
        self.sessions: dict[str, _Session] = {}
        self.oauth = None if oauth_clients is None else TokenIssuer(
            oauth_clients, token_lifetime_seconds, sap_client, clock)
        self.master = master_data or MasterData()
        self.materials = Materials()  # stock, reservations, requisitions (no dedup of its own)

    @property
    def service_url(self) -> str:
        return self.url + SERVICE_PATH

    @property
    def notifications(self) -> list[dict[str, Any]]:
        return [n.data for n in self.store.items]

    # --- what planners do in SAP (test hooks: no HTTP, no faults) ------------------------

    def move(self, number: str, to: str) -> None:
        """Put notification `number` in process (`in_progress`: SetMaintNotifToInProcess) or
        complete it (`completed`: CompleteMaintNotification), as a planner would."""
        phases = {"in_progress": PHASE_IN_PROCESS, "completed": PHASE_COMPLETED}
        if to not in phases:
            raise ValueError("move to 'in_progress' or 'completed'")
        self.store.set_phase(self.store.get(number), phases[to])

    def delete(self, number: str) -> None:
        """Archive notification `number` out of the API's sight."""
        self.store.items.remove(self.store.get(number))

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", SERVICE_PATH + "{tail:.*}", self._front)
        for path in (EQUIPMENT_PATH, FLOC_PATH):
            app.router.add_route("GET", path + "{tail:.*}", self._front)
        for path in MATERIAL_PATHS:
            app.router.add_route("*", path + "{tail:.*}", self._front)
        if self.oauth is not None:
            app.router.add_post(TOKEN_PATH, self.oauth.handle)

    def _counter_key(self, request: web.Request) -> tuple[str, str] | None:
        tail = request.match_info.get("tail")
        return None if tail is None else (request.method, _resource_name(tail))

    def expire_sessions(self) -> None:
        """End every session now: the next write meets a CSRF 403."""
        self.sessions.clear()

    # --- front -----------------------------------------------------------------------------

    async def _front(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        if request.method in WRITE_METHODS:
            await request.read()  # the whole request has arrived before any slowness
        fault = self.faults.take(request.method)
        early = await self._early_fault(fault) if fault is not None else None
        if early is not None:
            return early
        client = request.query.get("sap-client", self.sap_client)
        if client != self.sap_client:
            return self._unauthorized(f"Logon failed: client {client} is not available")
        user, session = self._authenticate(request)
        if user is None:
            return self._unauthorized("Logon failed: user or password incorrect")
        write = request.method in WRITE_METHODS
        if write and (session is None or request.headers.get("X-CSRF-Token") != session.token):
            return web.Response(status=403, text="CSRF token validation failed",
                                headers={"x-csrf-token": "Required"})
        try:
            resp = await self._dispatch(request, tail, user)
        except ODataError as exc:
            resp = _error(exc)
        if request.method in ("GET", "HEAD") and resp.status < 300 and \
                request.headers.get("X-CSRF-Token", "").lower() == "fetch":
            self._issue_token(resp, user, session)
        if (write and fault is not None and fault.mode is FaultMode.DROP_AFTER_COMMIT
                and resp.status < 300):
            return self.drop(request)  # committed; the client never hears of it
        return resp

    async def _early_fault(self, fault: Fault) -> web.StreamResponse | None:
        if fault.mode is FaultMode.SLOW:
            await asyncio.sleep(fault.delay_seconds)
        elif fault.mode is FaultMode.EXPIRE_SESSION:
            self.expire_sessions()
        elif fault.mode in (FaultMode.ERROR_5XX, FaultMode.RATE_429):
            status = fault.status if fault.mode is FaultMode.ERROR_5XX else 429
            resp = web.Response(status=status, content_type=JSON, body=error_body(
                "/IWFND/CM_BEC/026" if status != 429 else "RATE_LIMIT",
                f"Simulated HTTP {status}"))
            if fault.retry_after is not None:
                resp.headers["Retry-After"] = fault.retry_after
            return resp
        return None

    def _unauthorized(self, text: str) -> web.Response:
        realm = f"SAP NetWeaver Application Server [{self.system_id}/{self.sap_client}]"
        return web.Response(status=401, text=text,
                            headers={"WWW-Authenticate": f'Basic realm="{realm}"'})

    @property
    def _cookie(self) -> str:
        return f"SAP_SESSIONID_{self.system_id}_{self.sap_client}"

    def _authenticate(self, request: web.Request) -> tuple[str | None, _Session | None]:
        """The user (Basic, else a live session cookie) and the request's live session."""
        now = self._clock()
        sid = request.cookies.get(self._cookie, "")
        session = self.sessions.get(sid)
        if session is not None and session.expires_at <= now:
            del self.sessions[sid]
            session = None
        scheme, _, cred = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(cred, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None, None
            if user != self.user or password != self.password:
                return None, None
            if session is not None and session.user != user:
                session = None
        elif scheme.lower() == "bearer" and self.oauth is not None:
            if self.oauth.client_of(cred) is None:
                return None, None
            if session is not None and session.user != self.user:
                session = None
        elif session is None:
            return None, None
        if session is not None:
            session.expires_at = now + self.csrf_ttl_seconds  # use keeps a session alive
        return (session.user if session else self.user), session

    def _issue_token(self, resp: web.Response, user: str, session: _Session | None) -> None:
        """`X-CSRF-Token: Fetch`: the session's token, opening a session when there is none."""
        if session is None:
            sid = secrets.token_urlsafe(24)
            session = _Session(user, base64.b64encode(secrets.token_bytes(18)).decode(),
                               self._clock() + self.csrf_ttl_seconds)
            self.sessions[sid] = session
            resp.set_cookie(self._cookie, sid, path="/", httponly=True)
            resp.set_cookie(f"sap-XSRF_{self.system_id}_{self.sap_client}",
                            secrets.token_urlsafe(24), path="/", httponly=True)
            resp.set_cookie("sap-usercontext", f"sap-client={self.sap_client}", path="/")
        resp.headers["x-csrf-token"] = session.token

    # --- service -----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request, tail: str, user: str) -> web.Response:
        method = request.method
        if request.query.get("$format", "json") != "json":
            raise ODataError(400, "/IWBEP/CM_MGW_RT/005", "The simulator speaks JSON only")
        service = next((p for p in MATERIAL_PATHS if request.path.startswith(p)), None)
        if service is not None:  # stock, reservations, requisitions
            payload = await self._payload(request) if method == "POST" else None
            hold = self.materials.holds.pop(tail, None)
            if hold is Hold.BEFORE:
                await self.materials.wait_at_gate()
            status, doc = self.materials.answer(service, tail, method, request.query, payload,
                                                self.url + service)
            if hold is Hold.AFTER:
                await self.materials.wait_at_gate()
            return self.drop(request) if hold is Hold.DROP else _json(status, {"d": doc})
        if not request.path.startswith(SERVICE_PATH):  # API_EQUIPMENT, API_FUNCTIONALLOCATION
            service = EQUIPMENT_PATH if request.path.startswith(EQUIPMENT_PATH) else FLOC_PATH
            return _json(200, {"d": self.master.answer(service, tail, request.query, self.url)})
        if tail in ("", "/") and method in ("GET", "HEAD"):
            return _json(200, {"d": {"EntitySets": [
                "MaintenanceNotification", "MaintenanceNotificationItem",
                "MaintNotificationItemCause", "MaintNotificationItemActivity",
                "MaintenanceNotificationPartner"]}})
        if self.value_helps.handles(tail) and method == "GET":
            return _json(200, {"d": self.value_helps.answer(tail, request.query,
                                                            self.service_url)})
        if tail == "/$metadata" and method in ("GET", "HEAD"):
            return web.Response(body=METADATA, content_type="application/xml")
        if tail == "/MaintenanceNotification":
            if method == "GET":
                return self._list(request)
            if method == "POST":
                return self._create(request, await self._payload(request), user)
        if (m := KEY_RE.match(tail)) is not None:
            number = parse_key_literal(m.group(1))
            if number is None:
                raise ODataError(400, "/IWBEP/CM_MGW_RT/004", f"Invalid key {m.group(1)}")
            if method == "GET":
                return self._read(request, number)
            if method in ("PATCH", "MERGE", "PUT"):
                return self._update(request, number, await self._payload(request))
        if tail in ACTIONS and method == "POST":
            literal = request.query.get("MaintenanceNotification", "")
            number = parse_key_literal(literal)
            if number is None:
                raise ODataError(400, "/IWBEP/CM_MGW_RT/018", "Parameter MaintenanceNotification "
                                 "missing or not a string literal ('10000020')")
            item = self.store.get(number)
            self.store.set_phase(item, ACTIONS[tail])
            return _json(200, {"d": self.store.view(item, self.service_url)})
        if _resource_name(tail) != "other":
            raise ODataError(405, "/IWBEP/CM_MGW_RT/021", f"Method {method} is not allowed here")
        raise ODataError(404, "/IWBEP/CM_MGW_RT/021",
                         f"Resource not found for segment '{tail.lstrip('/')}'")

    async def _payload(self, request: web.Request) -> dict[str, Any]:
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/002", f"Malformed JSON payload: {exc}") \
                from exc
        if not isinstance(data, dict):
            raise ODataError(400, "/IWBEP/CM_MGW_RT/002", "The payload must be a JSON object")
        return data

    def _list(self, request: web.Request) -> web.Response:
        q = request.query
        found = self.store.items
        if "$filter" in q:
            pred = parse_filter(q["$filter"], PROPERTIES)
            found = [n for n in found if pred(n.data)]
        select = parse_select(q.get("$select"), PROPERTIES)
        skip, top = non_negative(q, "$skip") or 0, non_negative(q, "$top")
        page = found[skip:] if top is None else found[skip:skip + top]
        doc: dict[str, Any] = {"results": [
            project(self.store.view(n, self.service_url), select) for n in page]}
        if q.get("$inlinecount") == "allpages":
            doc["__count"] = str(len(found))
        return _json(200, {"d": doc})

    def _read(self, request: web.Request, number: str) -> web.Response:
        item = self.store.get(number)
        select = parse_select(request.query.get("$select"), PROPERTIES)
        return _json(200, {"d": project(self.store.view(item, self.service_url), select)},
                     {"ETag": item.etag})

    def _create(self, request: web.Request, data: dict[str, Any], user: str) -> web.Response:
        item = self.store.create(data, user)
        view = self.store.view(item, self.service_url)
        return _json(201, {"d": view}, {"Location": view["__metadata"]["uri"],
                                        "ETag": item.etag})

    def _update(self, request: web.Request, number: str, data: dict[str, Any]) -> web.Response:
        item = self.store.get(number)
        match = request.headers.get("If-Match")
        if match is None and self.require_if_match:
            raise ODataError(428, "/IWBEP/CM_MGW_RT/175",
                             "Precondition required: send If-Match with the entity's ETag")
        if match is not None and match != "*" and match != item.etag:
            raise ODataError(412, "/IWBEP/CM_MGW_RT/174",
                             "Precondition failed: the notification was changed meanwhile")
        self.store.update(item, data)
        return web.Response(status=204, headers={"ETag": item.etag})

    # --- control (no auth, no faults) ------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"notifications": self.notifications, "faults": self.faults.as_json(),
                "sessions": len(self.sessions), "counters": self.counters("resource")}

    def _bad_fault(self, message: str) -> web.Response:
        return web.Response(status=400, text=message)


def _resource_name(tail: str) -> str:
    """The resource a request was for, as counted in `received`."""
    if tail in ("", "/"):
        return "service"
    if tail == "/$metadata":
        return "$metadata"
    if tail == "/MaintenanceNotification":
        return "MaintenanceNotification"
    if KEY_RE.match(tail):
        return "MaintenanceNotification(key)"
    if tail in ACTIONS:
        return tail[1:]
    return "other"
