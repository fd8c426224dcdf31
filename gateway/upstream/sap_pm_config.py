"""`[[upstreams]] type = "sap_pm"`: the strict config of the SAP PM sink.

`build()` resolves the password and returns the running `SapPmSink` (gateway/upstream/sap_pm.py).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from gateway.settings import Secret, StrictModel, TlsSettings
from gateway.upstream.limits import (
    DEFAULT_FIRST_BYTE_TIMEOUT_SECONDS,
    SAP_PM_LIMITS,
    UpstreamLimits,
)
from gateway.upstream.oauth2 import OAuth2ClientCredentials
from gateway.workflow import ExistingWork, PartsTable

if TYPE_CHECKING:
    from gateway.upstream.sap_pm import SapPmSink


class TechnicalObjectType(enum.StrEnum):
    EQUIPMENT = "EAMS_EQUI"
    FUNCTIONAL_LOCATION = "EAMS_FL"


class OnClear(enum.StrEnum):
    COMPLETE = "complete"  # add the clear note, then CompleteMaintNotification
    NOTE_ONLY = "note_only"  # add the clear note; planners complete it themselves


class SapBasicAuth(StrictModel):
    """HTTP Basic with an SAP communication user."""

    kind: Literal["basic"] = "basic"
    user: str = Field(min_length=1, max_length=12)
    password: Secret


def _auth_kind(value: Any) -> str:
    """`kind` picks the auth model; without one it is Basic (configs from before OAuth2)."""
    kind = value.get("kind", "basic") if isinstance(value, dict) else getattr(value, "kind", "")
    return str(kind)


SapAuth = Annotated[Annotated[SapBasicAuth, Tag("basic")]
                    | Annotated[OAuth2ClientCredentials, Tag("oauth2")],
                    Discriminator(_auth_kind)]
TOKEN_PATH = "/sap/bc/sec/oauth2/token"  # AS ABAP's OAuth2 endpoint (UPSTREAM-APIS §1.3 [S])


class SapAssetRef(StrictModel):
    """Where a canonical asset lives in SAP. Equipment in external form ("210100094"); SAP
    keeps numeric equipment numbers zero-padded to 18 internally."""

    technical_object: str = Field(min_length=1, max_length=40)
    object_type: TechnicalObjectType = TechnicalObjectType.EQUIPMENT
    planning_plant: str = Field(default="", max_length=4)
    planner_group: str = Field(default="", max_length=3)
    work_center: str = Field(default="", max_length=8)
    work_center_plant: str = Field(default="", max_length=4)  # "" = planning_plant


class NotificationTypes(StrictModel):
    """NotificationType by canonical kind: a breakdown is a malfunction report."""

    malfunction: str = Field(default="M2", min_length=1, max_length=2)
    request: str = Field(default="M1", min_length=1, max_length=2)


class SapPartsConfig(StrictModel):
    """The spare-parts chain (gateway/upstream/sap_parts.py): stock, reservation, requisition.
    It runs for a raise whose asset and failure code have parts in the asset registry."""

    stock_service_path: str = "/sap/opu/odata/sap/API_MATERIAL_STOCK_SRV"
    reservation_service_path: str = "/sap/opu/odata/sap/API_RESERVATION_DOCUMENT_SRV"
    requisition_service_path: str = "/sap/opu/odata/sap/API_PURCHASEREQ_PROCESS_SRV"
    # A reservation cannot name a notification (RESV [S]): it is booked on a cost center
    # (movement type 201) and names the notification in its item text.
    cost_center: str = Field(default="", max_length=10)
    goods_movement_type: str = Field(default="201", min_length=3, max_length=3)
    requisition_type: str = Field(default="NB", min_length=1, max_length=4)
    purchasing_group: str = Field(default="", max_length=3)
    lead_time_days: int = Field(default=7, ge=0)  # DeliveryDate / requirement date from now


class SapDomainsConfig(StrictModel):
    """Where `check --online` reads SAP's priority and catalog-code domains (value helps of
    the notification service). API_MAINTNOTIFICATION documents neither [U]: the defaults are
    the Gateway value helps of search help H_T356 (ARTPR, PRIOK [S*]) and check table QPCD
    (KATALOGART, CODEGRUPPE, CODE); look at the target's `$metadata` and set what it offers."""

    priority_entity_set: str = Field(default="VL_SH_H_T356", min_length=1)
    priority_type: str = Field(default="PM", max_length=2)  # ARTPR of the notification type
    code_entity_set: str = Field(default="VL_CT_QPCD", min_length=1)
    # the catalog a rule's failure_code ("CODEGROUP/CODE", or a bare CODE) is looked up in
    catalog: str = Field(default="C", min_length=1, max_length=1)  # C: damage


class SapPmSinkConfig(StrictModel):
    """`[[upstreams]] type = "sap_pm"`: SAP S/4HANA PM notifications (OData v2, CSRF)."""

    type: Literal["sap_pm"]
    name: str = Field(min_length=1)
    base_url: str = Field(pattern=r"^https?://[^/\s]+/?$")  # scheme and host only
    service_path: str = "/sap/opu/odata/sap/API_MAINTNOTIFICATION"
    sap_client: str = Field(pattern=r"^\d{3}$")
    auth: SapAuth
    # page link to a record in the upstream's own UI; {receipt} is the id it gave (gateway/page.py)
    record_url: str | None = Field(default=None, pattern=r"^https?://\S*\{receipt\}\S*$")
    tls: TlsSettings = TlsSettings()
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    total_timeout_seconds: float = Field(default=30.0, gt=0)
    # no byte of an answer for this long (capped by the total) means a hung upstream: the
    # request is given up and retried, and the link is probed one request at a time
    first_byte_timeout_seconds: float = Field(default=DEFAULT_FIRST_BYTE_TIMEOUT_SECONDS, gt=0)
    concurrent_requests: int = Field(default=4, ge=1, le=32)  # per send(batch) call
    limits: UpstreamLimits = SAP_PM_LIMITS  # rate and in-flight cap, enforced by the forwarder
    asset_map: dict[str, SapAssetRef] = Field(default_factory=dict)
    priority_map: dict[int, str] = Field(
        default_factory=lambda: {1: "1", 2: "2", 3: "3", 4: "4"})
    notification_types: NotificationTypes = NotificationTypes()
    on_clear: OnClear = OnClear.COMPLETE
    # After an unclear create (timeout, dropped connection, 504) SAP may still be committing
    # it: the next attempt, which looks the dedup_key up before creating, waits this long
    # (longer than the ICM/work-process time limit of the target, so the lookup sees it).
    unclear_retry_after_seconds: float = Field(default=120.0, ge=0)
    malfunction_timezone: str = "UTC"  # MalfunctionStartDate/Time are plant-local wall clock
    reported_by_user: str = Field(default="", max_length=12)
    detection_code_group: str = Field(default="", max_length=8)
    detection_code: str = Field(default="", max_length=4)
    # open notifications on the asset made by someone else: what a raise does (per rule in
    # the rule file's `existing_work`; this is the default for rules that do not say)
    existing_work: ExistingWork = ExistingWork.CREATE
    existing_work_rules: dict[str, ExistingWork] = Field(default_factory=dict)  # from rules
    parts: SapPartsConfig = SapPartsConfig()
    domains: SapDomainsConfig = SapDomainsConfig()
    # Every this many seconds the notifications we created are read back (phase, system
    # status: gateway/status_poll.py); 0 turns the polling off.
    status_poll_seconds: float = Field(default=300.0, ge=0)
    spare_parts: PartsTable = Field(default_factory=dict)  # filled from the asset registry

    @field_validator("service_path")
    @classmethod
    def _service_path(cls, v: str) -> str:
        if not v.startswith("/") or v.endswith("/"):
            raise ValueError("service_path starts with '/' and does not end with one")
        return v

    @field_validator("priority_map")
    @classmethod
    def _priorities(cls, v: dict[int, str]) -> dict[int, str]:
        missing = sorted({1, 2, 3, 4} - set(v))
        if missing:
            raise ValueError(f"priority_map lacks canonical priorities {missing}")
        for canonical, sap in v.items():
            if not 1 <= len(sap) <= 1:
                raise ValueError(f"priority_map[{canonical}] {sap!r}: MaintPriority is 1 char")
        return v

    @field_validator("malfunction_timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @model_validator(mode="after")
    def _timeouts(self) -> SapPmSinkConfig:
        if self.connect_timeout_seconds > self.total_timeout_seconds:
            raise ValueError("connect_timeout_seconds is larger than total_timeout_seconds")
        return self

    @property
    def service_url(self) -> str:
        return self.base_url.rstrip("/") + self.service_path

    @property
    def token_url(self) -> str | None:
        """Where OAuth2 tokens come from (None with Basic auth)."""
        if not isinstance(self.auth, OAuth2ClientCredentials):
            return None
        return self.auth.token_url or (
            f"{self.base_url.rstrip('/')}{TOKEN_PATH}?sap-client={self.sap_client}")

    def build(self) -> SapPmSink:
        """Resolves the secrets now: a missing secret stops the start, not a delivery."""
        from gateway.upstream.sap_pm import SapPmSink  # the sink module imports this one

        if isinstance(self.auth, OAuth2ClientCredentials):
            self.auth.client_id.reveal()
            self.auth.client_secret.reveal()
            return SapPmSink(self, None)
        return SapPmSink(self, aiohttp.encode_basic_auth(self.auth.user,
                                                        self.auth.password.reveal()))
