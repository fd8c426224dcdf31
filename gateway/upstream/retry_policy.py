"""The one place that decides what an HTTP answer means for delivery: accept, retry or reject.

Shared by every HTTP sink. Transport failures (refused, reset, timeout, TLS) are always RETRY:
nothing is lost, and the forwarder's backoff and circuit breaker handle a long outage.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from gateway.model import Delivery, OutboxRecord, Outcome

# Statuses a retry may cure (draft-ietf-httpapi-idempotency-key-header, RFC 9110): timeouts,
# an in-flight duplicate (409), too early, rate limited, upstream/gateway trouble.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str = ""
    retry_after_seconds: float | None = None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP-date; None if absent or bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        return None
    delta = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, math.ceil(delta * 1000) / 1000)


def classify_status(status: int, problem: str = "", retry_after: str | None = None,
                    now: float | None = None) -> Verdict:
    """The delivery outcome for an HTTP status. `problem` (the error's title/detail) goes into
    the reason. 2xx is ACCEPTED here; the sink still checks the body it needs."""
    said = f"HTTP {status}" + (f": {problem}" if problem else "")
    if 200 <= status < 300:
        return Verdict(Outcome.ACCEPTED)
    if status in RETRYABLE_STATUSES:
        return Verdict(Outcome.RETRY, said, parse_retry_after(retry_after, now))
    if 300 <= status < 400:
        return Verdict(Outcome.REJECTED, said + " (redirects are not followed for a POST; "
                                               "fix base_url or the paths)")
    if 400 <= status < 500:
        return Verdict(Outcome.REJECTED, said)
    # 501, 505..599 and anything outside the known classes: most likely transient upstream
    # trouble; retrying keeps the record, the breaker stops us hammering.
    return Verdict(Outcome.RETRY, said, parse_retry_after(retry_after, now))


def wait_for_interrupted_send(rec: OutboxRecord, window_seconds: float,
                              now: float) -> Delivery | None:
    """For APIs without idempotency keys: a record whose earlier send never settled (the
    gateway died mid-send) may still be committing upstream. Looking it up too early could
    miss it and create it twice, so wait until `window_seconds` after that send."""
    if rec.unsettled_send_at is None:
        return None
    left = rec.unsettled_send_at + window_seconds - now
    if left <= 0:
        return None
    return Delivery(rec.id, Outcome.RETRY, retry_after_seconds=left, reason=(
        f"a send {now - rec.unsettled_send_at:.0f} s ago was interrupted by a restart; looking "
        f"it up in {left:.0f} s so that a late commit upstream is found, not duplicated"))
