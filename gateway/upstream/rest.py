"""Generic REST sink: POSTs maintenance requests and status updates with an Idempotency-Key.

Every retry of a message sends the same `Idempotency-Key` (the outbox key, as an RFC 8941
sf-string) and byte-identical canonical JSON (orjson, sorted keys), so an API with IETF/Stripe
idempotency semantics creates each request once, however often we retry after a lost answer.
Records of one asset are sent in order; different assets go concurrently (bounded).
"""

from __future__ import annotations

import enum
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Annotated, Any, Literal
from urllib.parse import quote

import aiohttp
import orjson
from pydantic import Field, model_validator

from gateway.model import Delivery, MessageKind, OutboxRecord, Outcome
from gateway.settings import Secret, StrictModel, TlsSettings
from gateway.status_poll import UpstreamReadError, UpstreamRecord, work_state
from gateway.upstream.lanes import send_in_episode_lanes
from gateway.upstream.limits import (
    DEFAULT_FIRST_BYTE_TIMEOUT_SECONDS,
    REST_LIMITS,
    UpstreamLimits,
    client_timeout,
)
from gateway.upstream.retry_policy import Verdict, classify_status
from gateway.workflow import (
    PART_STEPS,
    ExistingWork,
    PartLine,
    PartsTable,
    policy_for,
    stock_receipt,
)

USER_AGENT = "plantbridge/0.1"
MAX_REASON = 400


class UpstreamCheckError(Exception):
    """`check()` found the upstream unreachable, or it refused us."""


class BearerAuth(StrictModel):
    kind: Literal["bearer"]
    token: Secret


class ApiKeyAuth(StrictModel):
    kind: Literal["api_key"]
    header: str = "X-API-Key"
    key: Secret


class NoAuth(StrictModel):
    kind: Literal["none"] = "none"


AuthConfig = Annotated[BearerAuth | ApiKeyAuth | NoAuth, Field(discriminator="kind")]


class ReconcileMode(enum.StrEnum):
    LOOKUP = "lookup"  # look old requests up by external reference before creating them
    OFF = "off"  # the API has no lookup: trust its Idempotency-Key retention alone


class RestWorkflowConfig(StrictModel):
    """Existing work and the spare-parts chain (gateway/workflow.py) as plain HTTP calls.
    Paths may name {upstream_ref} (the request's id). Creating POSTs carry the step's outbox key
    as Idempotency-Key, like every POST of this sink; the API's idempotency makes them once."""

    # GET ?asset=<asset> (+ existing_work_query) -> a list of open requests ({"id", and
    # "external_ref" when it is ours}); unset: existing work is never looked for
    existing_work_path: str | None = None
    existing_work_query: dict[str, str] = Field(default_factory=lambda: {"status": "open"})
    # GET ?material=&plant=&storage_location= -> {"available": <number>}
    stock_path: str | None = None
    reservation_path: str | None = None  # POST of the reservation step's body
    requisition_path: str | None = None  # POST of the requisition step's body


class RestSinkConfig(StrictModel):
    """`[[upstreams]] type = "rest"`: a CMMS/EAM REST API that honours Idempotency-Key."""

    type: Literal["rest"]
    name: str = Field(min_length=1)
    base_url: str = Field(pattern=r"^https?://[^/\s]+(/\S*)?$")
    auth: AuthConfig = NoAuth()
    # page link to a record in the upstream's own UI; {receipt} is the id it gave (gateway/page.py)
    record_url: str | None = Field(default=None, pattern=r"^https?://\S*\{receipt\}\S*$")
    tls: TlsSettings = TlsSettings()
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    total_timeout_seconds: float = Field(default=30.0, gt=0)  # per HTTP request, all included
    # no byte of an answer for this long (capped by the total) means a hung upstream: the
    # request is given up and retried, and the link is probed one request at a time
    first_byte_timeout_seconds: float = Field(default=DEFAULT_FIRST_BYTE_TIMEOUT_SECONDS, gt=0)
    concurrent_requests: int = Field(default=4, ge=1, le=64)  # per send(batch) call
    limits: UpstreamLimits = REST_LIMITS  # rate and in-flight cap, enforced by the forwarder
    request_path: str = "/api/v1/maintenance-requests"
    status_path: str = "/api/v1/maintenance-requests/{upstream_ref}/status-updates"
    health_path: str = "/api/v1/health"
    # Past this age a request is first looked up by its external reference
    # (GET request_path?{lookup_query_param}=<dedup_key>): the server may have forgotten our
    # Idempotency-Key (24 h is usual), and a blind retry could then create a duplicate.
    reconcile: ReconcileMode = ReconcileMode.LOOKUP
    reconcile_after_seconds: float = Field(default=20 * 3600.0, ge=0)
    lookup_query_param: str = Field(default="external_ref", min_length=1)
    workflow: RestWorkflowConfig = RestWorkflowConfig()
    existing_work: ExistingWork = ExistingWork.CREATE  # for rules that do not say
    existing_work_rules: dict[str, ExistingWork] = Field(default_factory=dict)  # from rules
    spare_parts: PartsTable = Field(default_factory=dict)  # filled from the asset registry
    # Status both ways (gateway/asset_status.py, gateway/status_poll.py): `status` sends each
    # asset's condition state to `asset_status_path`; the requests we created are read back
    # every `status_poll_seconds` (0: never) and their status word mapped onto our states.
    status: bool = False
    status_heartbeat_seconds: float = Field(default=0.0, ge=0)
    asset_status_path: str = "/api/v1/asset-status"
    status_poll_seconds: float = Field(default=300.0, ge=0)
    in_progress_statuses: list[str] = ["in_progress", "acknowledged"]
    completed_statuses: list[str] = ["resolved", "closed", "completed", "cancelled",
                                     "rejected"]

    @model_validator(mode="after")
    def _paths(self) -> RestSinkConfig:
        for label in ("request_path", "status_path", "health_path"):
            if not getattr(self, label).startswith("/"):
                raise ValueError(f"{label} must start with '/'")
        if "{upstream_ref}" not in self.status_path:
            raise ValueError("status_path must contain {upstream_ref}")
        if self.connect_timeout_seconds > self.total_timeout_seconds:
            raise ValueError("connect_timeout_seconds is larger than total_timeout_seconds")
        return self

    def build(self, clock: Callable[[], float] = time.time) -> RestSink:
        """Resolves secrets now: a missing token stops the start, not the first delivery."""
        headers = {"User-Agent": USER_AGENT,
                   "Accept": "application/json, application/problem+json"}
        if isinstance(self.auth, BearerAuth):
            headers["Authorization"] = f"Bearer {self.auth.token.reveal()}"
        elif isinstance(self.auth, ApiKeyAuth):
            headers[self.auth.header] = self.auth.key.reveal()
        return RestSink(self, headers, clock)


def sf_string(value: str) -> str:
    """RFC 8941 sf-string: printable ASCII in quotes, with \\ and \" escaped."""
    if not (value.isascii() and value.isprintable()):  # i.e. every char in 0x20..0x7E
        raise ValueError("idempotency key has characters an sf-string cannot carry")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def canonical_json(body: Any) -> bytes:
    """Byte-identical on every retry: sorted keys, no whitespace."""
    return orjson.dumps(dict(body), option=orjson.OPT_SORT_KEYS)


def problem_text(body: bytes, content_type: str) -> str:
    """Title and detail of an RFC 7807 problem (or a similar JSON error), else a text snippet."""
    if "json" in content_type:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            err = doc.get("error")
            parts = [doc.get("title"), doc.get("detail"),
                     err.get("message") if isinstance(err, dict) else err]
            said = " - ".join(dict.fromkeys(str(p) for p in parts if p))  # once each
            if said:
                return said[:MAX_REASON]
    text = body.decode("utf-8", "replace").strip()
    return " ".join(text.split())[:200]


def transport_reason(exc: BaseException) -> str:
    """Plain words for a failure before any HTTP status arrived."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        err = exc.certificate_error
        said = getattr(err, "verify_message", None) or str(err)
        return f"certificate verify failed: {said} (check tls.ca_file and the server name)"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS error: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        # aiohttp's own text names its TLS setting ("ssl:default") even for plain http.
        where, err = f"{exc.host}:{exc.port}", exc.os_error
        if isinstance(err, ConnectionRefusedError):
            return f"connection refused by {where} (is the upstream running on that port?)"
        if isinstance(err, socket.gaierror):
            return f"cannot resolve the host name {exc.host!r}: {err.strerror or err}"
        if isinstance(err, TimeoutError):
            return f"timed out connecting to {where}"
        return f"cannot connect to {where}: {err.strerror or err}"
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the upstream"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection dropped before an answer (the request may have been committed)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class RestSink:
    """Implements `gateway.model.Sink`. One aiohttp session, created inside the running loop."""

    def __init__(self, cfg: RestSinkConfig, headers: dict[str, str],
                 clock: Callable[[], float] = time.time) -> None:
        self.name = cfg.name
        self._clock = clock
        self._cfg = cfg
        self._headers = headers
        self._base = cfg.base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self.limits = cfg.limits
        self.first_byte_timeout_seconds = min(cfg.first_byte_timeout_seconds,
                                              cfg.total_timeout_seconds)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            cfg = self._cfg
            timeout = client_timeout(cfg.connect_timeout_seconds,
                                     cfg.first_byte_timeout_seconds, cfg.total_timeout_seconds)
            # keep-alive pool as large as what may be in flight
            connector = aiohttp.TCPConnector(
                ssl=cfg.tls.for_url(self._base),
                limit=max(cfg.concurrent_requests, cfg.limits.max_in_flight))
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout,
                                                  headers=self._headers)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check(self) -> None:
        try:
            async with self._get_session().get(self._base + self._cfg.health_path,
                                               allow_redirects=False) as resp:
                body = await resp.read()
                if not 200 <= resp.status < 300:
                    raise UpstreamCheckError(
                        f"{self.name}: HTTP {resp.status} "
                        f"{problem_text(body, resp.content_type)}".rstrip())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamCheckError(f"{self.name}: {transport_reason(exc)}") from exc

    async def send(self, batch: Sequence[OutboxRecord]) -> Sequence[Delivery]:
        """One Delivery per record. Per asset in order; after a RETRY, later records of that
        asset in this batch wait too (a clear never overtakes its raise)."""
        return await send_in_episode_lanes(batch, self.send_one, self._cfg.concurrent_requests)

    def parts_for(self, asset: str, failure_code: str) -> Sequence[PartLine]:
        """The registry's parts for a raise: a chain only when every step has a path."""
        wf = self._cfg.workflow
        if not (wf.stock_path and wf.reservation_path and wf.requisition_path):
            return ()
        return tuple(self._cfg.spare_parts.get(asset, {}).get(failure_code, ()))

    async def send_one(self, rec: OutboxRecord) -> Delivery:
        msg = rec.message
        if msg.kind in PART_STEPS:
            return await self._part_step(rec)
        if msg.kind is MessageKind.MAINTENANCE_REQUEST:
            path = self._cfg.request_path
            if self._reconcile_due(rec):
                found = await self._lookup(rec)
                if found is not None:
                    return found
            if self._cfg.workflow.existing_work_path is not None:  # else nothing to look up
                existing = await self._existing_work(rec)
                if existing is not None:
                    return existing
        elif msg.kind is MessageKind.STATUS_UPDATE:
            if not rec.upstream_ref:
                return Delivery(rec.id, Outcome.REJECTED, reason=(
                    "no upstream reference: the maintenance request of episode "
                    f"{msg.episode_id} was never accepted (dead-lettered?), nothing to update"))
            path = self._cfg.status_path.replace("{upstream_ref}",
                                                 quote(rec.upstream_ref, safe=""))
        else:
            return Delivery(rec.id, Outcome.REJECTED, reason=f"unsupported kind {msg.kind}")
        try:
            headers = {"Idempotency-Key": sf_string(msg.key),
                       "Content-Type": "application/json"}
            body = canonical_json(msg.body)
        except (ValueError, TypeError) as exc:
            return Delivery(rec.id, Outcome.REJECTED, reason=f"cannot encode the message: {exc}")
        answer = await self._exchange(rec.id, "POST", path, body=body, headers=headers)
        if isinstance(answer, Delivery):
            return answer
        if msg.kind is MessageKind.STATUS_UPDATE:
            return Delivery(rec.id, Outcome.ACCEPTED, receipt=rec.upstream_ref)
        receipt = _created_id(answer)
        if receipt is None:
            return Delivery(rec.id, Outcome.RETRY, reason=(
                "2xx without a usable 'id' in the body; retrying under the same "
                "Idempotency-Key, whose replay returns the stored answer"))
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=receipt)

    async def _exchange(self, record_id: int, method: str, path: str, *, body: bytes | None = None,
                        headers: dict[str, str] | None = None,
                        params: dict[str, str] | None = None) -> bytes | Delivery:
        """One HTTP request: the 2xx body, or the Delivery its failure means."""
        try:
            async with self._get_session().request(
                    method, self._base + path, data=body, headers=headers, params=params,
                    allow_redirects=False) as resp:
                answer = await resp.read()
                status, ctype = resp.status, resp.content_type
                retry_after = resp.headers.get("Retry-After")
                location = resp.headers.get("Location", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Delivery(record_id, Outcome.RETRY, reason=transport_reason(exc))
        if 200 <= status < 300:
            return answer
        problem = problem_text(answer, ctype)
        if 300 <= status < 400 and location:
            problem = f"{problem} (Location: {location})".strip()
        return _delivery(record_id, classify_status(status, problem, retry_after))

    def _reconcile_due(self, rec: OutboxRecord) -> bool:
        return (self._cfg.reconcile is ReconcileMode.LOOKUP
                and self._clock() - rec.message.created_at >= self._cfg.reconcile_after_seconds)

    async def _lookup(self, rec: OutboxRecord) -> Delivery | None:
        """Past the server's key retention a retry could create a duplicate: look for the
        request by its external reference first. None: not there, go and create it."""
        ref = rec.message.body.get("external_ref") or rec.message.body.get("dedup_key")
        if not ref:
            return None
        answer = await self._exchange(rec.id, "GET", self._cfg.request_path,
                                      params={self._cfg.lookup_query_param: str(ref)})
        if isinstance(answer, Delivery):
            return replace(answer, reason=f"lookup by {ref}: {answer.reason}")
        found = _found_ids(answer)
        if found is None:
            return Delivery(rec.id, Outcome.RETRY, reason=(
                f"lookup by {ref}: 2xx with an unreadable body; looking again before creating"))
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=found[0]) if found else None

    # --- reading back: status polling and reconciliation (gateway/status_poll.py) ---------

    async def read_record(self, upstream_ref: str) -> UpstreamRecord | None:
        """The request `upstream_ref` as the API shows it now; None when it is gone (404)."""
        path = self._cfg.request_path.rstrip("/") + "/" + quote(upstream_ref, safe="")
        doc = await self._get_json(path, None, missing_ok=True)
        if doc is None:
            return None
        if not isinstance(doc, dict):
            raise UpstreamReadError(f"{self.name}: GET {path} did not answer an object")
        return _rest_record(self._cfg, doc, upstream_ref)

    async def records_by_reference(self, external_ref: str) -> list[UpstreamRecord]:
        """Every request carrying `external_ref` (ours, or someone else's copy of it)."""
        doc = await self._get_json(self._cfg.request_path,
                                   {self._cfg.lookup_query_param: external_ref},
                                   missing_ok=False)
        if isinstance(doc, dict):
            doc = next((doc[k] for k in ("items", "member", "results", "data")
                        if isinstance(doc.get(k), list)), None)
        if not isinstance(doc, list):
            raise UpstreamReadError(f"{self.name}: the lookup by {external_ref} answered no list")
        return [_rest_record(self._cfg, item, ident) for item in doc
                if isinstance(item, dict) and (ident := _id_of(item)) is not None]

    async def _get_json(self, path: str, params: dict[str, str] | None, *,
                        missing_ok: bool) -> Any:
        """A GET's JSON; None for a 404 when `missing_ok`; UpstreamReadError otherwise."""
        try:
            async with self._get_session().get(self._base + path, params=params,
                                               allow_redirects=False) as resp:
                body = await resp.read()
                status, ctype = resp.status, resp.content_type
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamReadError(f"{self.name}: {transport_reason(exc)}") from exc
        if status == 404 and missing_ok:
            return None
        if not 200 <= status < 300:
            raise UpstreamReadError(f"{self.name}: GET {path}: HTTP {status} "
                                    f"{problem_text(body, ctype)}".rstrip())
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamReadError(f"{self.name}: GET {path}: not JSON") from exc

    async def _post_json(self, rec: OutboxRecord, path: str, body: Any, key: str
                         ) -> bytes | Delivery:
        try:
            headers = {"Idempotency-Key": sf_string(key), "Content-Type": "application/json"}
            data = canonical_json(body)
        except (ValueError, TypeError) as exc:
            return Delivery(rec.id, Outcome.REJECTED, reason=f"cannot encode the message: {exc}")
        return await self._exchange(rec.id, "POST", path, body=data, headers=headers)

    async def _existing_work(self, rec: OutboxRecord) -> Delivery | None:
        """Under `link`/`skip`: ACCEPTED with an open request on the asset that is not ours
        (linked: our raise posted to it as a status update "linked"); None otherwise."""
        body, wf = rec.message.body, self._cfg.workflow
        policy = policy_for(body, self._cfg.existing_work_rules, self._cfg.existing_work)
        if policy is ExistingWork.CREATE or wf.existing_work_path is None:
            return None
        answer = await self._exchange(rec.id, "GET", wf.existing_work_path, params={
            **wf.existing_work_query, "asset": str(body.get("asset", ""))})
        if isinstance(answer, Delivery):
            return replace(answer, reason=f"look-up of open work: {answer.reason}")
        try:
            doc = orjson.loads(answer)
        except orjson.JSONDecodeError:
            doc = None
        items = doc if isinstance(doc, list) else None
        if items is None:
            return Delivery(rec.id, Outcome.RETRY, reason=(
                "look-up of open work: 2xx without a JSON list; not creating blind"))
        key = str(body.get("dedup_key", ""))
        theirs = [i for i in map(_id_of, (x for x in items if isinstance(x, dict)
                                          and x.get("external_ref") != key)) if i]
        if not theirs:
            return None
        if policy is ExistingWork.LINK:
            path = self._cfg.status_path.replace("{upstream_ref}", quote(theirs[0], safe=""))
            got = await self._post_json(rec, path, dict(body) | {"status": "linked"},
                                        f"link:{rec.message.key}")
            if isinstance(got, Delivery):
                return replace(got, reason=f"link to {theirs[0]}: {got.reason}")
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=theirs[0],
                        reason=f"{policy}: request {theirs[0]} is open on this asset already")

    async def _part_step(self, rec: OutboxRecord) -> Delivery:
        msg, wf = rec.message, self._cfg.workflow
        ref = quote(str(msg.body.get("request_ref", "")), safe="")
        if msg.kind is MessageKind.PARTS_STOCK and wf.stock_path:
            levels: dict[str, float] = {}
            for raw in msg.body.get("parts") or []:
                part = PartLine.model_validate(raw)
                answer = await self._exchange(rec.id, "GET", wf.stock_path, params={
                    "material": part.material, "plant": part.plant,
                    "storage_location": part.storage_location})
                if isinstance(answer, Delivery):
                    return replace(answer, reason=f"stock of {part.place}: {answer.reason}")
                try:
                    levels[part.place] = float(orjson.loads(answer)["available"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    return Delivery(rec.id, Outcome.RETRY, reason=(
                        f"stock of {part.place}: no number 'available' in the answer"))
            return Delivery(rec.id, Outcome.ACCEPTED, receipt=stock_receipt(levels))
        path = (wf.reservation_path if msg.kind is MessageKind.PARTS_RESERVATION
                else wf.requisition_path)
        if not path:
            return Delivery(rec.id, Outcome.REJECTED, reason=f"no path configured for {msg.kind}")
        got = await self._post_json(rec, path.replace("{upstream_ref}", ref), msg.body, msg.key)
        if isinstance(got, Delivery):
            return got
        receipt = _created_id(got)
        if receipt is None:
            return Delivery(rec.id, Outcome.RETRY, reason=(
                "2xx without a usable 'id'; retrying under the same Idempotency-Key"))
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=receipt)


def _rest_record(cfg: RestSinkConfig, doc: dict[str, Any], ident: str) -> UpstreamRecord:
    """A request as the API showed it, its status word mapped onto our three states."""
    raw = str(doc.get("status") or "")
    ref = doc.get("external_ref")
    state = work_state(raw, cfg.in_progress_statuses, cfg.completed_statuses)
    return UpstreamRecord(ident, state, raw, str(ref) if ref is not None else None)


    # --- workflow: existing work, parts steps ---------------------------------------------


def _delivery(record_id: int, v: Verdict) -> Delivery:
    return Delivery(record_id, v.outcome, reason=v.reason[:MAX_REASON],
                    retry_after_seconds=v.retry_after_seconds)


def _created_id(answer: bytes) -> str | None:
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    return _id_of(doc)


def _id_of(doc: Any) -> str | None:
    ident = doc.get("id") if isinstance(doc, dict) else None
    if isinstance(ident, int) and not isinstance(ident, bool):
        return str(ident)
    return ident if isinstance(ident, str) and ident else None


def _found_ids(answer: bytes) -> list[str] | None:
    """Ids in a lookup answer: a JSON list, or a list under items/member/results/data."""
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict):
        doc = next((doc[k] for k in ("items", "member", "results", "data")
                    if isinstance(doc.get(k), list)), None)
    if not isinstance(doc, list):
        return None
    ids = [_id_of(item) for item in doc]
    return [i for i in ids if i is not None]
