"""The one place that decides what an HTTP answer means for delivery: accept, retry or reject.

Shared by every HTTP sink. Transport failures (refused, reset, timeout, TLS) are always RETRY:
nothing is lost, and the forwarder's backoff and circuit breaker (`Breaker`, below) handle a long
outage.
"""

from __future__ import annotations

import enum
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from gateway.backoff import Backoff
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


# --- what a delivery says about the link ---------------------------------------------------

_HTTP_STATUS = re.compile(r"\bHTTP (\d{3})\b")
OVERLOAD_STATUSES = frozenset({429, 503})


def http_status(reason: str) -> int | None:
    """The HTTP status a sink's reason names ("HTTP 503: ..."), if any."""
    if not reason:  # every accepted record: no search
        return None
    found = _HTTP_STATUS.search(reason)
    return int(found.group(1)) if found else None


def answered(d: Delivery) -> bool:
    """The upstream answered (any HTTP status, or a real outcome): it is not hung."""
    return d.outcome is not Outcome.RETRY or http_status(d.reason) is not None


def overloaded(d: Delivery) -> bool:
    """429, 503 or a timeout: the upstream asks us, in words or silence, to send less."""
    if d.outcome is not Outcome.RETRY:
        return False
    status = http_status(d.reason)
    return status in OVERLOAD_STATUSES or (status is None and "timed out" in d.reason)


class BreakerState(enum.StrEnum):
    CLOSED = "closed"  # delivering
    OPEN = "open"  # upstream failing: nothing goes until the next probe
    HALF_OPEN = "half_open"  # one probe request in flight


class Breaker:
    """A circuit breaker that probes: while the upstream is down one request at a time tests it
    (every few seconds, the wait growing up to `probe_max_seconds`), and the first answer
    closes it, so recovery is noticed within one probe interval, not a record's retry cap.

    Only the probe's failure reopens an open breaker: requests sent before it opened and
    failing late do not push the next probe further out.
    """

    def __init__(self, failures_to_open: int, initial_seconds: float, probe_max_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state = BreakerState.CLOSED
        self._failures_to_open = max(1, failures_to_open)
        self._failures = 0
        self._backoff = Backoff(initial_seconds, max(initial_seconds, probe_max_seconds))
        self._clock = clock
        self._probe_at = 0.0
        self._probe: int | None = None  # record id of the probe in flight

    def allowance(self) -> int | None:
        """How many requests may start now: None for no limit (closed)."""
        if self.state is BreakerState.CLOSED:
            return None
        if self._probe is not None or self._clock() < self._probe_at:
            return 0
        return 1

    def wait(self) -> float:
        """Seconds until the next probe may start (0 when closed or due)."""
        if self.state is BreakerState.CLOSED or self._probe is not None:
            return 0.0
        return max(0.0, self._probe_at - self._clock())

    def started(self, record_id: int) -> None:
        """A request starts; while open it is the probe."""
        if self.state is not BreakerState.CLOSED and self._probe is None:
            self._probe = record_id
            self.state = BreakerState.HALF_OPEN

    def succeeded(self) -> None:
        """Any request got a real outcome: the upstream works."""
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._probe = None
        self._backoff.reset()

    def failed(self, record_id: int) -> None:
        if self.state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self._failures_to_open:
                self.trip()
        elif record_id == self._probe:
            self.trip()

    def trip(self) -> None:
        """Open now (too many failures, a failed probe, or a hung request)."""
        if self.state is BreakerState.OPEN and self._probe is None:
            return  # already waiting for a probe: keep its time
        self.state = BreakerState.OPEN
        self._probe = None
        self._probe_at = self._clock() + self._backoff.next_delay()
