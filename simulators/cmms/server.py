"""A generic SaaS CMMS HTTP API (aiohttp) with IETF/Stripe Idempotency-Key semantics and faults.

The data lives on the simulator object, so `go_down()` / `come_up()` (stop listening, listen
again on the same port) keep it; `state_file` also keeps it across process restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import orjson
from aiohttp import web

from simulators.cmms import api
from simulators.cmms.faults import Fault, FaultMode, Faults, TokenBucket
from simulators.cmms.idempotency import (
    MAX_KEY_LENGTH,
    BadIdempotencyKey,
    IdempotencyStore,
    StoredResponse,
    Verdict,
    fingerprint,
    parse_key,
)
from simulators.httpsim import Handler, HttpSimulator

Action = Callable[[web.Request, str, bytes], StoredResponse]
IdempotencyMode = Literal["ietf", "stripe"]
FAULT = web.RequestKey("cmms_fault", Fault)
PRINCIPAL = web.RequestKey("cmms_principal", str)


# The usual Idempotency-Key: a quoted sf-string without escapes, 1..255 printable characters.
# Matched at once; anything else (escapes, a bare token, bad input) goes to `parse_key`, which
# gives the same key or the same error: parsing a ~30-character key one character at a time in
# Python cost more than the rest of the idempotency check.
_PLAIN_KEY = re.compile(r'"([ !#-\[\]-~]{1,' + str(MAX_KEY_LENGTH) + '})"')


def _key_of(header: str | None) -> str:
    plain = _PLAIN_KEY.fullmatch(header) if header is not None else None
    return plain.group(1) if plain is not None else parse_key(header)


def _to_web(stored: StoredResponse, replayed: bool = False) -> web.Response:
    headers = dict(stored.headers)
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return web.Response(status=stored.status, body=stored.body, headers=headers)


class CmmsSimulator(HttpSimulator):
    """`await sim.start()`; `sim.url`; `sim.faults.set("rate_429", count=2)`; `await sim.stop()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str = "test-key",
                 idempotency_mode: IdempotencyMode = "ietf", key_ttl_seconds: float = 86400.0,
                 *, state_file: Path | None = None, ssl_context: ssl.SSLContext | None = None,
                 rate_limit_per_second: float | None = None, rate_limit_burst: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if idempotency_mode not in ("ietf", "stripe"):
            raise ValueError("idempotency_mode is 'ietf' or 'stripe'")
        super().__init__(host, port, ssl_context)
        self.api_key = api_key
        self.idempotency_mode: IdempotencyMode = idempotency_mode
        self.state_file = state_file
        self.faults: Faults = Faults()
        self._bucket = (None if rate_limit_per_second is None
                        else TokenBucket(rate_limit_per_second, rate_limit_burst, clock))
        self.requests: list[dict[str, Any]] = []
        # id -> request, beside `requests` (which tests read): a status update finds its request
        # in O(1); a scan per update made a 100,000-record drain quadratic (minutes of CPU)
        self._by_id: dict[str, dict[str, Any]] = {}
        self.status_updates: list[dict[str, Any]] = []
        self.asset_status: list[dict[str, Any]] = []  # POST /api/v1/asset-status, in order
        self.idempotency = IdempotencyStore(key_ttl_seconds, clock)
        # what a client's limits look like from here: the most API requests handled at once,
        # each API request's arrival (monotonic), and answers replayed from a stored key
        self.peak_active = 0
        self.arrivals: list[float] = []
        self.replays = 0

    async def start(self) -> None:
        if self.state_file is not None and self.state_file.exists():
            self._load(self.state_file)
        await self.come_up()

    # --- app -----------------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        r = api.REQUESTS_PATH
        app.router.add_post(r, self._create_request)
        app.router.add_get(r, self._list_requests)
        app.router.add_get(r + "/{id}", self._get_request)
        app.router.add_post(r + "/{id}/status-updates", self._create_update)
        app.router.add_get("/api/v1/health", self._health)
        app.router.add_post(api.ASSET_STATUS_PATH, self._create_asset_status)

    def _counter_key(self, request: web.Request) -> tuple[str, str]:
        info = request.match_info
        return request.method, info.route.resource.canonical if info.route.resource \
            else request.path

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """What sits in front of the API: faults, rate limit and authentication."""
        self.peak_active = max(self.peak_active, self.active_requests)
        self.arrivals.append(time.monotonic())
        body = await request.read() if self.faults.needs_body else b""
        fault = self.faults.take(request.method, body)
        if fault is not None:
            early = await self._early_fault(request, fault)
            if early is not None:
                return early
            request[FAULT] = fault
        wait = self._bucket.take() if self._bucket is not None else 0.0
        if wait > 0:
            resp = _to_web(api.problem(429, "rate-limited", "Too Many Requests",
                                       "rate limit exceeded"))
            resp.headers["Retry-After"] = str(math.ceil(wait))
            return resp
        principal = self._principal(request)
        if principal is None:
            resp = _to_web(api.problem(401, "unauthorized", "Unauthorized",
                                       "send Authorization: Bearer <key> or X-API-Key: <key>"))
            resp.headers["WWW-Authenticate"] = 'Bearer realm="cmms"'
            return resp
        request[PRINCIPAL] = principal
        return await handler(request)

    async def _early_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        if fault.mode is FaultMode.HANG:
            await self.until_going_down()
            return self.drop(request)
        if fault.mode is FaultMode.ERROR_5XX:
            return _to_web(api.problem(fault.status, "injected", "Injected failure",
                                       f"simulated HTTP {fault.status}"))
        if fault.mode is FaultMode.RATE_429:
            resp = _to_web(api.problem(429, "rate-limited", "Too Many Requests",
                                       "simulated rate limit"))
            if fault.retry_after is not None:
                resp.headers["Retry-After"] = fault.retry_after
            return resp
        if fault.mode is FaultMode.SLOW and request.method != "POST":
            await asyncio.sleep(fault.delay_seconds)
        return None

    def _principal(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else request.headers.get("X-API-Key")
        return f"key:{given}" if given is not None and given == self.api_key else None

    # --- idempotent POSTs --------------------------------------------------------------

    async def _idempotent(self, request: web.Request, action: Action) -> web.StreamResponse:
        try:
            key = _key_of(request.headers.get("Idempotency-Key"))
        except BadIdempotencyKey as exc:
            return _to_web(api.problem(400, "idempotency-key-missing",
                                       "Idempotency-Key missing or invalid", str(exc)))
        body = await request.read()
        scope = (key, request[PRINCIPAL], f"{request.method} {request.path}")
        verdict, entry = self.idempotency.reserve(scope, fingerprint(body))
        if verdict is Verdict.MISMATCH:
            return _to_web(self._mismatch())
        if verdict is Verdict.IN_FLIGHT:
            resp = _to_web(api.problem(409, "idempotency-key-in-flight", "Request in progress",
                                       "a request with this Idempotency-Key is being processed;"
                                       " retry later"))
            resp.headers["Retry-After"] = "1"
            return resp
        if verdict is Verdict.REPLAY:
            assert entry is not None and entry.response is not None
            self.replays += 1
            return _to_web(entry.response, replayed=True)
        fault = request.get(FAULT)
        try:
            if fault is not None and fault.mode is FaultMode.SLOW:
                await asyncio.sleep(fault.delay_seconds)
            stored = action(request, key, body)
        except BaseException:
            self.idempotency.release(scope)
            raise
        if self.idempotency_mode == "stripe" and 400 <= stored.status < 500:
            self.idempotency.release(scope)  # Stripe keeps no validation failures
        else:
            self.idempotency.complete(scope, stored)
        self._save()
        if fault is not None and fault.mode is FaultMode.DROP_AFTER_COMMIT:
            return self.drop(request)
        return _to_web(stored)

    def _mismatch(self) -> StoredResponse:
        if self.idempotency_mode == "stripe":
            msg = ("Keys for idempotent requests can only be used with the same parameters "
                   "they were first used with.")
            return api.problem(400, "idempotency-error", "Idempotency key reused", msg,
                               error={"type": "idempotency_error", "message": msg})
        return api.problem(422, "idempotency-key-reused", "Idempotency-Key reused",
                           "this Idempotency-Key was used with a different request body")

    async def _create_request(self, request: web.Request) -> web.StreamResponse:
        return await self._idempotent(request, self._do_create)

    def _do_create(self, request: web.Request, key: str, body: bytes) -> StoredResponse:
        data = api.valid_object(body, api.request_errors)
        if isinstance(data, StoredResponse):
            return data
        at = api.now_iso()
        rec = {"id": f"MR-{len(self.requests) + 1:06d}", "idempotency_key": key, "body": data,
               "status": "open", "external_ref": api.external_ref(data), "created_at": at,
               "status_history": [{"status": "open", "at": at}]}
        self._add(rec)
        return api.created(api.request_view(rec), f"{api.REQUESTS_PATH}/{rec['id']}")

    async def _create_update(self, request: web.Request) -> web.StreamResponse:
        return await self._idempotent(request, self._do_update)

    def _do_update(self, request: web.Request, key: str, body: bytes) -> StoredResponse:
        rec = self._find(request.match_info["id"])
        if rec is None:
            return api.problem(404, "not-found", "Not Found",
                               f"no maintenance request {request.match_info['id']!r}")
        data = api.valid_object(body, api.status_errors)
        if isinstance(data, StoredResponse):
            return data
        at = api.now_iso()
        upd = {"id": f"SU-{len(self.status_updates) + 1:06d}", "request_id": rec["id"],
               "idempotency_key": key, "body": data, "created_at": at}
        self.status_updates.append(upd)
        rec["status"] = data["status"]
        rec["status_history"].append({"status": data["status"], "at": at, "update": upd["id"]})
        loc = f"{api.REQUESTS_PATH}/{quote(rec['id'])}/status-updates/{upd['id']}"
        return api.created(api.update_view(upd), loc)

    async def _create_asset_status(self, request: web.Request) -> web.StreamResponse:
        return await self._idempotent(request, self._do_asset_status)

    def _do_asset_status(self, request: web.Request, key: str, body: bytes) -> StoredResponse:
        data = api.valid_object(body, api.asset_status_errors)
        if isinstance(data, StoredResponse):
            return data
        rec = {"id": f"AS-{len(self.asset_status) + 1:06d}", "idempotency_key": key,
               "body": data, "received_at": api.now_iso()}
        self.asset_status.append(rec)
        return api.created({"id": rec["id"]}, f"{api.ASSET_STATUS_PATH}/{rec['id']}")

    # --- what a maintainer does (test hooks: no HTTP, no faults) --------------------------

    def set_status(self, request_id: str, status: str) -> None:
        """A planner moves the request on (in_progress, resolved, closed...)."""
        rec = self._find(request_id)
        if rec is None:
            raise KeyError(request_id)
        if status not in api.STATUSES:
            raise ValueError(f"status must be one of {sorted(api.STATUSES)}")
        rec["status"] = status
        rec["status_history"].append({"status": status, "at": api.now_iso(), "by": "planner"})
        self._save()

    def delete_request(self, request_id: str) -> None:
        """An administrator purges the request. Its Idempotency-Key goes with it, as it would
        once the key's retention (24 h here) has passed: a resend then creates it again."""
        rec = self._find(request_id)
        if rec is None:
            raise KeyError(request_id)
        self.requests.remove(rec)
        self._by_id.pop(request_id, None)
        self.idempotency.forget_key(rec["idempotency_key"])
        self._save()

    def add_foreign(self, external_ref: str, asset: str, title: str = "Entered by hand",
                    status: str = "open") -> str:
        """A request someone made in the CMMS itself, carrying `external_ref`."""
        at = api.now_iso()
        rec = {"id": f"MR-{len(self.requests) + 1:06d}-X", "idempotency_key": "",
               "body": {"title": title, "asset": asset, "external_ref": external_ref},
               "status": status, "external_ref": external_ref, "created_at": at,
               "status_history": [{"status": status, "at": at}]}
        self._add(rec)
        self._save()
        return str(rec["id"])

    # --- reads ---------------------------------------------------------------------------

    def _add(self, rec: dict[str, Any]) -> None:
        self.requests.append(rec)
        self._by_id[rec["id"]] = rec

    def _find(self, request_id: str) -> dict[str, Any] | None:
        return self._by_id.get(request_id)

    async def _list_requests(self, request: web.Request) -> web.StreamResponse:
        ref = request.query.get("external_ref")
        found = [api.request_view(r) for r in self.requests
                 if ref is None or r["external_ref"] == ref]
        return web.json_response(found, dumps=lambda o: orjson.dumps(o).decode())

    async def _get_request(self, request: web.Request) -> web.StreamResponse:
        rec = self._find(request.match_info["id"])
        if rec is None:
            return _to_web(api.problem(404, "not-found", "Not Found",
                                       f"no maintenance request {request.match_info['id']!r}"))
        return web.json_response(api.request_view(rec), dumps=lambda o: orjson.dumps(o).decode())

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    # --- control (no auth, no faults) ----------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "status_updates": self.status_updates,
            "asset_status": self.asset_status,
            "counters": self.counters("path"),
            "faults": self.faults.as_json(),
            "idempotency_keys": len(self.idempotency),
            "peak_active": self.peak_active,
            "arrivals": len(self.arrivals),
            "replays": self.replays,
        }

    def _bad_fault(self, message: str) -> web.Response:
        return _to_web(api.problem(400, "bad-fault", "Bad fault", message))

    # --- persistence ---------------------------------------------------------------------

    def _save(self) -> None:
        if self.state_file is None:
            return
        doc = {"requests": self.requests, "status_updates": self.status_updates,
               "idempotency": self.idempotency.dump()}
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(orjson.dumps(doc))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)

    def _load(self, path: Path) -> None:
        doc = orjson.loads(path.read_bytes())
        self.requests = list(doc.get("requests", []))
        self._by_id = {r["id"]: r for r in self.requests}
        self.status_updates = list(doc.get("status_updates", []))
        with contextlib.suppress(KeyError, TypeError, ValueError):
            self.idempotency.load(list(doc.get("idempotency", [])))
