"""A generic SaaS CMMS HTTP API (aiohttp) with IETF/Stripe Idempotency-Key semantics and faults.

The data lives on the simulator object, so `go_down()` / `come_up()` (stop listening, listen
again on the same port) keep it; `state_file` also keeps it across process restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import orjson
from aiohttp import web

from simulators.cmms import api
from simulators.cmms.faults import Fault, FaultMode, Faults, TokenBucket
from simulators.cmms.idempotency import (
    BadIdempotencyKey,
    IdempotencyStore,
    StoredResponse,
    Verdict,
    fingerprint,
    parse_key,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Action = Callable[[web.Request, str, bytes], StoredResponse]
IdempotencyMode = Literal["ietf", "stripe"]
NO_RESPONSE = 0  # status recorded in `received` for dropped and hung requests
DROPPED = web.RequestKey("cmms_dropped", bool)
FAULT = web.RequestKey("cmms_fault", Fault)
PRINCIPAL = web.RequestKey("cmms_principal", str)


def _to_web(stored: StoredResponse, replayed: bool = False) -> web.Response:
    headers = dict(stored.headers)
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return web.Response(status=stored.status, body=stored.body, headers=headers)


class CmmsSimulator:
    """`await sim.start()`; `sim.url`; `sim.faults.set("rate_429", count=2)`; `await sim.stop()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str = "test-key",
                 idempotency_mode: IdempotencyMode = "ietf", key_ttl_seconds: float = 86400.0,
                 *, state_file: Path | None = None, ssl_context: ssl.SSLContext | None = None,
                 rate_limit_per_second: float | None = None, rate_limit_burst: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if idempotency_mode not in ("ietf", "stripe"):
            raise ValueError("idempotency_mode is 'ietf' or 'stripe'")
        self.host = host
        self._port = port
        self.api_key = api_key
        self.idempotency_mode: IdempotencyMode = idempotency_mode
        self.state_file = state_file
        self._ssl = ssl_context
        self.faults = Faults()
        self._bucket = (None if rate_limit_per_second is None
                        else TokenBucket(rate_limit_per_second, rate_limit_burst, clock))
        self.requests: list[dict[str, Any]] = []
        self.status_updates: list[dict[str, Any]] = []
        self.received: Counter[tuple[str, str, int]] = Counter()
        self.active_requests = 0  # API requests being handled right now (hung ones included)
        self.idempotency = IdempotencyStore(key_ttl_seconds, clock)
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()  # set when going down: hung requests give up

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://{self.host}:{self._port}"

    @property
    def listening(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        if self.state_file is not None and self.state_file.exists():
            self._load(self.state_file)
        await self.come_up()

    async def come_up(self) -> None:
        if self._runner is not None:
            return
        self._release = asyncio.Event()
        runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, ssl_context=self._ssl)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = int(runner.addresses[0][1])
        self._runner = runner

    async def go_down(self) -> None:
        """Stop listening (connections are refused); data and port are kept for `come_up()`."""
        runner, self._runner = self._runner, None
        if runner is not None:
            self._release.set()
            await runner.cleanup()

    async def stop(self) -> None:
        await self.go_down()

    async def __aenter__(self) -> CmmsSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- app -----------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._front])
        r = api.REQUESTS_PATH
        app.router.add_post(r, self._create_request)
        app.router.add_get(r, self._list_requests)
        app.router.add_get(r + "/{id}", self._get_request)
        app.router.add_post(r + "/{id}/status-updates", self._create_update)
        app.router.add_get("/api/v1/health", self._health)
        app.router.add_get("/_sim/state", self._sim_state)
        app.router.add_get("/_sim/faults", self._sim_get_faults)
        app.router.add_post("/_sim/faults", self._sim_set_faults)
        return app

    @web.middleware
    async def _front(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """What sits in front of the API: faults, authentication and request counting."""
        if request.path.startswith("/_sim/"):
            return await handler(request)
        info = request.match_info
        template = info.route.resource.canonical if info.route.resource else request.path
        status = NO_RESPONSE
        self.active_requests += 1
        try:
            resp = await self._guarded(request, handler)
            status = NO_RESPONSE if request.get(DROPPED) else resp.status
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.active_requests -= 1
            self.received[(request.method, template, status)] += 1

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = self.faults.take(request.method)
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
            await self._release.wait()
            return self._drop(request)
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

    def _drop(self, request: web.Request) -> web.Response:
        """Close the connection without an answer."""
        request[DROPPED] = True
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=204)  # never reaches the client

    def _principal(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else request.headers.get("X-API-Key")
        return f"key:{given}" if given is not None and given == self.api_key else None

    # --- idempotent POSTs --------------------------------------------------------------

    async def _idempotent(self, request: web.Request, action: Action) -> web.StreamResponse:
        try:
            key = parse_key(request.headers.get("Idempotency-Key"))
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
            return self._drop(request)
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
        data = api.parse_json_object(body)
        if isinstance(data, StoredResponse):
            return data
        errors = api.request_errors(data)
        if errors:
            return api.invalid(errors)
        at = api.now_iso()
        rec = {"id": f"MR-{len(self.requests) + 1:06d}", "idempotency_key": key, "body": data,
               "status": "open", "external_ref": api.external_ref(data), "created_at": at,
               "status_history": [{"status": "open", "at": at}]}
        self.requests.append(rec)
        return api.created(api.request_view(rec), f"{api.REQUESTS_PATH}/{rec['id']}")

    async def _create_update(self, request: web.Request) -> web.StreamResponse:
        return await self._idempotent(request, self._do_update)

    def _do_update(self, request: web.Request, key: str, body: bytes) -> StoredResponse:
        rec = self._find(request.match_info["id"])
        if rec is None:
            return api.problem(404, "not-found", "Not Found",
                               f"no maintenance request {request.match_info['id']!r}")
        data = api.parse_json_object(body)
        if isinstance(data, StoredResponse):
            return data
        errors = api.status_errors(data)
        if errors:
            return api.invalid(errors)
        at = api.now_iso()
        upd = {"id": f"SU-{len(self.status_updates) + 1:06d}", "request_id": rec["id"],
               "idempotency_key": key, "body": data, "created_at": at}
        self.status_updates.append(upd)
        rec["status"] = data["status"]
        rec["status_history"].append({"status": data["status"], "at": at, "update": upd["id"]})
        loc = f"{api.REQUESTS_PATH}/{quote(rec['id'])}/status-updates/{upd['id']}"
        return api.created(api.update_view(upd), loc)

    # --- reads ---------------------------------------------------------------------------

    def _find(self, request_id: str) -> dict[str, Any] | None:
        return next((r for r in self.requests if r["id"] == request_id), None)

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
            "counters": [{"method": m, "path": p, "status": s, "count": n}
                         for (m, p, s), n in sorted(self.received.items())],
            "faults": self.faults.as_json(),
            "idempotency_keys": len(self.idempotency),
        }

    async def _sim_state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state(), dumps=lambda o: orjson.dumps(o).decode())

    async def _sim_get_faults(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.faults.as_json())

    async def _sim_set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            spec = orjson.loads(await request.read())
            if not isinstance(spec, dict):
                raise ValueError("the body must be a JSON object")
            self.faults.set_from_json(spec)
        except (ValueError, TypeError) as exc:
            return _to_web(api.problem(400, "bad-fault", "Bad fault", str(exc)))
        return web.json_response(self.faults.as_json())

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
        self.status_updates = list(doc.get("status_updates", []))
        with contextlib.suppress(KeyError, TypeError, ValueError):
            self.idempotency.load(list(doc.get("idempotency", [])))
