"""SAP S/4HANA Plant Maintenance sink: maintenance notifications over API_MAINTNOTIFICATION.

SAP has no idempotency key, so duplicates are avoided here (UPSTREAM-APIS §1.5, §5 rule 5):
every notification carries `MaintNotifExtReferenceNumber = dedup_key`, and every attempt to
create one first looks that reference up, single-flight per key. A create whose outcome is
unclear (timeout, dropped connection, 504) is RETRY after `unclear_retry_after_seconds`, when SAP
is surely done with it; that attempt then finds it instead of creating it again. A clear notes
the malfunction end on the notification its raise created and (by default) completes it,
reading the notification first so that a repeated clear changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from zoneinfo import ZoneInfo

import aiohttp

from gateway.model import Delivery, MessageKind, OutboxRecord, Outcome
from gateway.upstream.lanes import send_in_episode_lanes
from gateway.upstream.limits import client_timeout
from gateway.upstream.oauth2 import OAuth2ClientCredentials, OAuth2Refused, OAuth2Unavailable
from gateway.upstream.rest import UpstreamCheckError, transport_reason
from gateway.upstream.sap_domains import sap_domain_problems
from gateway.upstream.sap_odata import CsrfUnavailable, ODataClient
from gateway.upstream.sap_parts import SapPartsSteps
from gateway.upstream.sap_pm_base import (
    LINK_ERRORS,
    TRANSPORT_ERRORS,
    link_failure,
    oauth2_refused,
)
from gateway.upstream.sap_pm_clear import SapClearSteps
from gateway.upstream.sap_pm_config import (
    NotificationTypes,
    OnClear,
    SapAssetRef,
    SapBasicAuth,
    SapPmSinkConfig,
    TechnicalObjectType,
)
from gateway.upstream.sap_pm_raise import SapRaiseSteps
from gateway.upstream.sap_pm_read import SapReadBack
from gateway.workflow import PART_STEPS, PartLine

# The raise, the clear and the read-back are parts of the sink in sap_pm_raise, sap_pm_clear
# and sap_pm_read (on sap_pm_base); these names stay importable from here.
__all__ = ["NotificationTypes", "OnClear", "SapAssetRef", "SapBasicAuth", "SapPmSink",
           "SapPmSinkConfig", "TechnicalObjectType", "oauth2_refused"]


class SapPmSink(SapRaiseSteps, SapClearSteps, SapReadBack):
    """Implements `gateway.model.Sink` for SAP PM. Receipt: the notification number."""

    def __init__(self, cfg: SapPmSinkConfig, authorization: str | None) -> None:
        """`authorization`: the Basic header value; None with OAuth2 (`cfg.auth`)."""
        self.name = cfg.name
        self._cfg = cfg
        self.config = cfg
        self._zone = ZoneInfo(cfg.malfunction_timezone)
        timeout = client_timeout(cfg.connect_timeout_seconds, cfg.first_byte_timeout_seconds,
                                 cfg.total_timeout_seconds)
        self.limits = cfg.limits
        self.first_byte_timeout_seconds = min(cfg.first_byte_timeout_seconds,
                                              cfg.total_timeout_seconds)
        self.client = ODataClient(cfg.service_url, cfg.sap_client, authorization=authorization,
                                  ssl_context=cfg.tls.for_url(cfg.base_url), timeout=timeout,
                                  connection_limit=max(cfg.concurrent_requests,
                                                       cfg.limits.max_in_flight),
                                  oauth2=_oauth2(cfg))
        self._authorization = authorization
        self._services: dict[str, ODataClient] = {}  # other services of the system, by path
        self._flights: dict[str, tuple[asyncio.Lock, int]] = {}  # key -> (lock, users)
        self._parts = SapPartsSteps(self)

    def parts_for(self, asset: str, failure_code: str) -> Sequence[PartLine]:
        """The spare parts a raise of `failure_code` on `asset` needs (the registry's list):
        after its notification exists, gateway/workflow.py chains the parts steps."""
        return tuple(self._cfg.spare_parts.get(asset, {}).get(failure_code, ()))

    async def aclose(self) -> None:
        await self.client.aclose()
        for other in self._services.values():
            await other.aclose()

    def service_client(self, service_path: str) -> ODataClient:
        """A client of another OData service of the same system and client (API_EQUIPMENT,
        API_FUNCTIONALLOCATION) with the same credentials and the same OAuth2 token."""
        client = self._services.get(service_path)
        if client is None:
            cfg = self._cfg
            client = ODataClient(
                cfg.base_url.rstrip("/") + service_path, cfg.sap_client,
                authorization=self._authorization, ssl_context=cfg.tls.for_url(cfg.base_url),
                timeout=aiohttp.ClientTimeout(total=cfg.total_timeout_seconds,
                                              sock_connect=cfg.connect_timeout_seconds),
                connection_limit=cfg.concurrent_requests)
            client.bearer = self.client.bearer  # one token for the whole system
            self._services[service_path] = client
        return client

    async def check(self) -> None:
        """Reachable, credentials accepted, a CSRF token issued."""
        try:
            answer = await self.client.fetch_token()
        except LINK_ERRORS as exc:
            raise UpstreamCheckError(f"{self.name}: {link_failure(exc)}") from exc
        if not answer.ok:
            raise UpstreamCheckError(f"{self.name}: {self._failure(0, answer, 'token').reason}")

    async def send(self, batch: Sequence[OutboxRecord]) -> Sequence[Delivery]:
        """One Delivery per record. Per asset in order; after a RETRY the later records of that
        asset wait too (a clear never overtakes its raise). Assets go concurrently."""
        return await send_in_episode_lanes(batch, self.send_one, self._cfg.concurrent_requests)

    async def send_one(self, rec: OutboxRecord) -> Delivery:
        kind = rec.message.kind
        try:
            if kind is MessageKind.MAINTENANCE_REQUEST:
                return await self._raise(rec)
            if kind is MessageKind.STATUS_UPDATE:
                return await self._clear(rec)
            if kind in PART_STEPS:
                return await self._parts.send(rec)
        except (CsrfUnavailable, OAuth2Unavailable) as exc:
            return Delivery(rec.id, Outcome.RETRY, reason=str(exc))
        except OAuth2Refused as exc:  # a configuration fault: loud, and no retrying it
            return Delivery(rec.id, Outcome.REJECTED, reason=oauth2_refused(exc))
        except TRANSPORT_ERRORS as exc:
            return Delivery(rec.id, Outcome.RETRY, reason=transport_reason(exc))
        return Delivery(rec.id, Outcome.REJECTED, reason=f"unsupported message kind {kind}")

    # --- check --online: the priority and failure-code domains (gateway/registry_online.py)

    async def domain_problems(self, *, priorities: Collection[int],
                              failure_codes: Collection[str]) -> list[str]:
        """Which of the rules' canonical priorities and failure codes SAP does not know, in
        plain words ([] when all are known); see gateway/upstream/sap_domains.py."""
        return await sap_domain_problems(self, self._cfg, priorities=priorities,
                                         failure_codes=failure_codes)


def _oauth2(cfg: SapPmSinkConfig) -> tuple[OAuth2ClientCredentials, str] | None:
    if isinstance(cfg.auth, OAuth2ClientCredentials) and cfg.token_url is not None:
        return cfg.auth, cfg.token_url
    return None
