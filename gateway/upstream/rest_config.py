"""`[[upstreams]] type = "rest"`: the config models of the generic REST sink (auth, the
existing-work and parts paths, reconciliation, status both ways); `build()` makes the sink."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator

from gateway.settings import Secret, StrictModel, TlsSettings
from gateway.upstream.limits import DEFAULT_FIRST_BYTE_TIMEOUT_SECONDS, REST_LIMITS, UpstreamLimits
from gateway.upstream.rest_wire import USER_AGENT
from gateway.workflow import ExistingWork, PartsTable

if TYPE_CHECKING:
    from gateway.upstream.rest import RestSink


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
        from gateway.upstream.rest import RestSink  # the sink module imports this one

        return RestSink(self, headers, clock)
