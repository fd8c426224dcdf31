"""`[[upstreams]] type = "maximo"`: the strict config of the Maximo sink.

`build()` resolves secrets and returns the running `MaximoSink` (gateway/upstream/maximo.py).
"""

from __future__ import annotations

import base64
import enum
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator

from gateway.settings import Secret, StrictModel, TlsSettings
from gateway.upstream.limits import (
    DEFAULT_FIRST_BYTE_TIMEOUT_SECONDS,
    MAXIMO_LIMITS,
    UpstreamLimits,
)
from gateway.upstream.rest import USER_AGENT
from gateway.workflow import ExistingWork, PartsTable

if TYPE_CHECKING:
    from gateway.upstream.maximo import MaximoSink

Ident = Annotated[str, Field(min_length=1, pattern=r'^[^"]+$')]  # usable in oslc.where


class MaximoApiKeyAuth(StrictModel):
    """MAS Manage: an API key, sent as the `apikey` header."""

    kind: Literal["api_key"]
    key: Secret


class MaximoMaxauthAuth(StrictModel):
    """Maximo 7.6 native authentication: `maxauth: base64(user:password)` on every request."""

    kind: Literal["maxauth"]
    user: str = Field(min_length=1)
    password: Secret


MaximoAuth = Annotated[MaximoApiKeyAuth | MaximoMaxauthAuth, Field(discriminator="kind")]


class MaximoAssetRef(StrictModel):
    """Where a canonical asset lives in Maximo (asset keys are assetnum + siteid)."""

    assetnum: Ident
    siteid: Ident | None = None  # None: the sink's siteid
    location: Ident | None = None


class UnknownAssetPolicy(enum.StrEnum):
    REJECT = "reject"  # dead letter: "asset X has no entry in asset_map"
    PASS_THROUGH = "pass_through"  # send the canonical asset id as assetnum


class ClearAction(enum.StrEnum):
    RESOLVE = "resolve"  # PATCH status to resolved_status
    WORKLOG_ONLY = "worklog_only"  # add a work log note, leave the status to the planners


class OptimisticLock(enum.StrEnum):
    IF_MATCH = "if_match"  # send the fetched _rowstamp as the If-Match header
    ROWSTAMP_IN_BODY = "rowstamp_in_body"  # send it as "_rowstamp" in the PATCH body
    OFF = "off"


OPEN_WO_STATUSES = ("WAPPR", "APPR", "WSCH", "WMATL", "WPCOND", "INPRG")


class MaximoPartsConfig(StrictModel):
    """The spare-parts chain (gateway/upstream/maximo_parts.py): stock, reservation,
    requisition. It runs for a raise whose asset and failure code have parts in the asset
    registry."""

    inventory_structure: str = Field(default="mxapiinventory", pattern=r"^[A-Za-z0-9_]+$")
    reservation_structure: str = Field(default="mxapiinvres", pattern=r"^[A-Za-z0-9_]+$")
    # MXAPIPR was seen only in a third-party list [T]; IBM documents MXPR (PR/PRLINE) as an
    # integration object: expose PR as a REST object structure of that name if yours has none
    requisition_structure: str = Field(default="mxapipr", pattern=r"^[A-Za-z0-9_]+$")
    # registry storage_location ("0001") or "plant/storage_location" -> Maximo storeroom
    storerooms: dict[str, Ident] = Field(default_factory=dict)
    restype: Ident = "AUTOMATIC"  # INVRESERVE.RESTYPE [U]
    lead_time_days: int = Field(default=7, ge=0)  # requireddate = now + this


class MaximoDomainsConfig(StrictModel):
    """Where `check --online` reads the priority and failure-code domains
    (gateway/upstream/maximo_domains.py)."""

    numeric_domain_structure: str = Field(default="mxapinumericdomain",
                                          pattern=r"^[A-Za-z0-9_]+$")
    priority_domain: Ident = "TICKETPRIORITY"  # the domain of SR REPORTEDPRIORITY [U]
    failure_list_structure: str = Field(default="mxapifailurelist", pattern=r"^[A-Za-z0-9_]+$")


class MaximoSinkConfig(StrictModel):
    """`[[upstreams]] type = "maximo"`: Maximo Manage service requests (object structure
    mxapisr), deduplicated by externalrecid."""

    type: Literal["maximo"]
    name: str = Field(min_length=1)
    base_url: str = Field(pattern=r"^https?://[^/\s]+/?$")  # scheme and host[:port]
    api_root: str = "/maximo/api"  # Maximo 7.6: "/maximo/oslc"
    object_structure: str = Field(default="mxapisr", pattern=r"^[A-Za-z0-9_]+$")
    auth: MaximoAuth
    # page link to a record in the upstream's own UI; {receipt} is the id it gave, {kind} is
    # "wotrack" for a linked work order ("WO:" receipts) and "sr" otherwise (gateway/page.py)
    record_url: str | None = Field(default=None, pattern=r"^https?://\S*\{receipt\}\S*$")
    tls: TlsSettings = TlsSettings()
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    total_timeout_seconds: float = Field(default=30.0, gt=0)  # per HTTP request
    # no byte of an answer for this long (capped by the total) means a hung upstream: the
    # request is given up and retried, and the link is probed one request at a time
    first_byte_timeout_seconds: float = Field(default=DEFAULT_FIRST_BYTE_TIMEOUT_SECONDS, gt=0)
    concurrent_requests: int = Field(default=4, ge=1, le=64)  # per send(batch) call
    limits: UpstreamLimits = MAXIMO_LIMITS  # rate and in-flight cap, enforced by the forwarder
    siteid: Ident
    orgid: Ident | None = None
    reportedby: str = ""  # a PERSON id; empty: Maximo uses the API user's person
    external_system: str = "PLANTBRIDGE"  # SR externalsystem; empty: not sent
    asset_map: dict[str, MaximoAssetRef] = {}
    unknown_asset: UnknownAssetPolicy = UnknownAssetPolicy.REJECT
    # canonical priority 1 critical .. 4 low -> reportedpriority (priority domains are per site)
    priority_map: dict[int, int] = {1: 1, 2: 2, 3: 3, 4: 4}
    on_clear: ClearAction = ClearAction.RESOLVE
    resolved_status: Ident = "RESOLVED"
    # A clear finding the SR already in one of these statuses changes nothing and is accepted.
    settled_statuses: list[str] = ["RESOLVED", "CLOSED", "CANCELLED"]
    optimistic_lock: OptimisticLock = OptimisticLock.IF_MATCH
    # After a create with an unclear outcome (timeout, dropped connection, 5xx), the lookup
    # of the next attempt waits at least this long: a slow Maximo may still be committing it,
    # and a lookup too early would miss it and create a duplicate.
    unclear_retry_after_seconds: float = Field(default=10.0, ge=0)
    # Open SRs on the asset made by someone else: what a raise does (per rule in the rule
    # file's `existing_work`; this is the default for rules that do not say). "Open" is the
    # SRSTATUS values IBM's SR app treats as active (NEW, QUEUED, INPROG, PENDING [S*]);
    # customer synonyms go here.
    existing_work: ExistingWork = ExistingWork.CREATE
    existing_work_rules: dict[str, ExistingWork] = Field(default_factory=dict)  # from rules
    open_statuses: list[Ident] = Field(default_factory=lambda: ["NEW", "QUEUED", "INPROG",
                                                                 "PENDING"], min_length=1)
    # Open work orders on the asset count as existing work too (gateway/upstream/maximo_work.py:
    # a WO with another failure code than the rule's never does). "" : SRs only.
    wo_object_structure: str = Field(default="mxapiwodetail", pattern=r"^[A-Za-z0-9_]*$")
    # every WO status but COMP, CLOSE, CAN, HISTEDIT [S]; add your WOSTATUS synonyms
    open_wo_statuses: list[Ident] = Field(default_factory=lambda: list(OPEN_WO_STATUSES),
                                          min_length=1)
    # the records we created or linked are read back this often (gateway/status_poll.py; 0: off)
    status_poll_seconds: float = Field(default=300.0, ge=0)
    parts: MaximoPartsConfig = MaximoPartsConfig()
    domains: MaximoDomainsConfig = MaximoDomainsConfig()
    spare_parts: PartsTable = Field(default_factory=dict)  # filled from the asset registry

    @model_validator(mode="after")
    def _consistent(self) -> MaximoSinkConfig:
        if not self.api_root.startswith("/") or self.api_root.endswith("/"):
            raise ValueError("api_root starts with '/' and has no trailing '/'")
        missing = sorted({1, 2, 3, 4} - set(self.priority_map))
        if missing:
            raise ValueError(f"priority_map has no entry for canonical priority {missing}")
        if self.connect_timeout_seconds > self.total_timeout_seconds:
            raise ValueError("connect_timeout_seconds is larger than total_timeout_seconds")
        return self

    def build(self) -> MaximoSink:
        """Resolves secrets now: a missing key stops the start, not the first delivery."""
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if isinstance(self.auth, MaximoApiKeyAuth):
            headers["apikey"] = self.auth.key.reveal()
        else:
            pair = f"{self.auth.user}:{self.auth.password.reveal()}".encode()
            headers["maxauth"] = base64.b64encode(pair).decode()
        from gateway.upstream.maximo import MaximoSink  # the sink module imports this one

        return MaximoSink(self, headers)
