"""Generic REST sink: POSTs maintenance requests and status updates with an Idempotency-Key.

Every retry of a message sends the same `Idempotency-Key` (the outbox key, as an RFC 8941
sf-string) and byte-identical canonical JSON (orjson, sorted keys), so an API with IETF/Stripe
idempotency semantics creates each request once, however often we retry after a lost answer.
Records of one asset are sent in order; different assets go concurrently (bounded).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from gateway.model import Delivery, MessageKind, OutboxRecord, Outcome
from gateway.status_poll import UpstreamReadError, UpstreamRecord, work_state
from gateway.upstream.lanes import send_in_episode_lanes
from gateway.upstream.limits import TotalTimeouts, client_timeout
from gateway.upstream.rest_config import (
    ApiKeyAuth,
    AuthConfig,
    BearerAuth,
    NoAuth,
    ReconcileMode,
    RestSinkConfig,
    RestWorkflowConfig,
)
from gateway.upstream.rest_wire import (
    MAX_REASON,
    USER_AGENT,
    UpstreamCheckError,
    canonical_json,
    created_id,
    delivery_for,
    found_ids,
    id_of,
    problem_text,
    sf_string,
    transport_reason,
)
from gateway.upstream.rest_workflow import RestWorkflowSteps
from gateway.upstream.retry_policy import classify_status
from gateway.workflow import PART_STEPS, PartLine

# The config models live in rest_config, the shared wire helpers in rest_wire, the workflow
# steps in rest_workflow; every name stays importable from here, as the other sinks, the
# gateway and the tests import them.
__all__ = [
    "MAX_REASON", "USER_AGENT", "ApiKeyAuth", "AuthConfig", "BearerAuth", "NoAuth",
    "ReconcileMode", "RestSink", "RestSinkConfig", "RestWorkflowConfig", "UpstreamCheckError",
    "canonical_json", "problem_text", "sf_string", "transport_reason",
]


class RestSink(RestWorkflowSteps):
    """Implements `gateway.model.Sink`. One aiohttp session, created inside the running loop."""

    def __init__(self, cfg: RestSinkConfig, headers: dict[str, str],
                 clock: Callable[[], float] = time.time) -> None:
        self.name = cfg.name
        self._clock = clock
        self._cfg = cfg
        self._headers = headers
        self._base = cfg.base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._timeout = client_timeout(cfg.connect_timeout_seconds,
                                       cfg.first_byte_timeout_seconds, cfg.total_timeout_seconds)
        self._totals = TotalTimeouts(self._timeout)  # of the sends, on one timer
        self.limits = cfg.limits
        self.first_byte_timeout_seconds = min(cfg.first_byte_timeout_seconds,
                                              cfg.total_timeout_seconds)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            cfg = self._cfg
            # keep-alive pool as large as what may be in flight
            connector = aiohttp.TCPConnector(
                ssl=cfg.tls.for_url(self._base),
                limit=max(cfg.concurrent_requests, cfg.limits.max_in_flight))
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout,
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
        receipt = created_id(answer)
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
            with self._totals.limit():
                async with self._get_session().request(
                        method, self._base + path, data=body, headers=headers, params=params,
                        allow_redirects=False, timeout=self._totals.timeout) as resp:
                    answer = await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Delivery(record_id, Outcome.RETRY, reason=transport_reason(exc))
        status = resp.status
        if 200 <= status < 300:  # the headers are read only when they explain a failure
            return answer
        problem = problem_text(answer, resp.content_type)
        location = resp.headers.get("Location", "")
        if 300 <= status < 400 and location:
            problem = f"{problem} (Location: {location})".strip()
        return delivery_for(record_id, classify_status(status, problem,
                                                       resp.headers.get("Retry-After")))

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
        found = found_ids(answer)
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
                if isinstance(item, dict) and (ident := id_of(item)) is not None]

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


def _rest_record(cfg: RestSinkConfig, doc: dict[str, Any], ident: str) -> UpstreamRecord:
    """A request as the API showed it, its status word mapped onto our three states."""
    raw = str(doc.get("status") or "")
    ref = doc.get("external_ref")
    state = work_state(raw, cfg.in_progress_statuses, cfg.completed_statuses)
    return UpstreamRecord(ident, state, raw, str(ref) if ref is not None else None)
