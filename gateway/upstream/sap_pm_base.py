"""What the SAP PM sink's parts share: the notification entity set and phase constants, the
transport errors, the attributes every part reads, and how a non-2xx answer becomes a
Delivery. `SapPmSink` (sap_pm.py) is made of the parts in sap_pm_raise, sap_pm_clear and
sap_pm_read, each a subclass of `SapPmBase`."""

from __future__ import annotations

import asyncio
from zoneinfo import ZoneInfo

import aiohttp

from gateway.model import Delivery, Outcome
from gateway.upstream.oauth2 import OAuth2ClientCredentials, OAuth2Refused, OAuth2Unavailable
from gateway.upstream.rest import MAX_REASON, transport_reason
from gateway.upstream.retry_policy import classify_status
from gateway.upstream.sap_odata import Answer, CsrfUnavailable, ODataClient, error_text
from gateway.upstream.sap_pm_config import SapBasicAuth, SapPmSinkConfig

ENTITY_SET = "MaintenanceNotification"
MAX_EXT_REF = 20
# NotifProcessingPhase values that mean "completed or beyond" [U]: only "1" (outstanding) is
# confirmed by a vendor sample; "4" is completed in the standard phase domain as we know it.
DONE_PHASES = frozenset({"4", "5"})
# Open work made by someone else: phases "1" outstanding [T], "2" postponed and "3" in process
# (both unverified; the shared doc's recommended `lt '4'`, spelled as the equalities it means).
OPEN_PHASES = ("1", "2", "3")
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
UNCLEAR_STATUSES = frozenset({504})  # a proxy gave up; the backend may still commit
# no answer from SAP at all: no CSRF or OAuth2 token, or the transport failed (`link_failure`)
LINK_ERRORS: tuple[type[Exception], ...] = (CsrfUnavailable, OAuth2Unavailable, OAuth2Refused,
                                            *TRANSPORT_ERRORS)


class SapPmBase:
    """The state `SapPmSink.__init__` sets up, and the failure reading every step uses."""

    name: str
    client: ODataClient
    _cfg: SapPmSinkConfig
    _zone: ZoneInfo
    _flights: dict[str, tuple[asyncio.Lock, int]]  # key -> (lock, users)

    def failure(self, record_id: int, answer: Answer, what: str) -> Delivery:
        """A non-2xx answer as a Delivery (for the parts steps, gateway/upstream/sap_parts.py)."""
        return self._failure(record_id, answer, what)

    def _failure(self, record_id: int, answer: Answer, what: str) -> Delivery:
        """A non-2xx answer as a Delivery; the OData error message is quoted in the reason."""
        said = error_text(answer)
        if answer.status == 401 and isinstance(self._cfg.auth, OAuth2ClientCredentials):
            return Delivery(record_id, Outcome.REJECTED, reason=(
                f"{what}: SAP refused the OAuth2 token: check client id/secret and that OAuth "
                "is enabled for the service (HTTP 401 even with a fresh token)"))
        if answer.status == 401 and isinstance(self._cfg.auth, SapBasicAuth):
            return Delivery(record_id, Outcome.REJECTED, reason=(
                f"{what}: credentials refused (HTTP 401) for user {self._cfg.auth.user!r} in "
                f"client {self._cfg.sap_client}; check auth.user / auth.password"))
        if answer.csrf_refused:  # still refused right after a fresh token
            return Delivery(record_id, Outcome.RETRY, reason=(
                f"{what}: CSRF token refused again right after a fresh fetch (session cookie "
                "lost? a load balancer without sticky sessions?)"))
        v = classify_status(answer.status, said, answer.retry_after)
        return Delivery(record_id, v.outcome, reason=f"{what}: {v.reason}"[:MAX_REASON],
                        retry_after_seconds=v.retry_after_seconds)


def oauth2_refused(exc: OAuth2Refused) -> str:
    return f"SAP refused the OAuth2 token: check client id/secret ({exc})"


def link_failure(exc: BaseException) -> str:
    """Plain words for one of LINK_ERRORS, as `check` and the read-back say it."""
    if isinstance(exc, OAuth2Refused):
        return oauth2_refused(exc)
    if isinstance(exc, TRANSPORT_ERRORS):
        return transport_reason(exc)
    return str(exc)
