"""What the forwarder learns about its link from each answer: the counters and flags it shows
(`ForwarderStats`), the breaker, token bucket and in-flight cap it feeds, the hung-request
watchdog, and when a RETRY is due again (`retry_delay`). A base of `Forwarder`."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from gateway.model import Delivery, OutboxRecord, Outcome
from gateway.story import DeliveryStory
from gateway.upstream.forwarder_config import ForwardingConfig
from gateway.upstream.limits import InFlightCap, TokenBucket
from gateway.upstream.retry_policy import (
    OVERLOAD_STATUSES,
    Breaker,
    BreakerState,
    answered,
    http_status,
    overloaded,
)


@dataclass(slots=True)
class ForwarderStats:
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    retried: int = 0
    breaker: BreakerState = BreakerState.CLOSED
    last_error: str = ""
    last_success_at: float | None = None
    last_failure_at: float | None = None
    by_status: dict[str, int] = field(default_factory=dict)
    hung: bool = False  # a request has had no answer for the hung limit (until one answers)
    in_flight: int = 0
    in_flight_cap: int = 0  # the adaptive cap's current value (max_in_flight when fixed)

    @property
    def failing(self) -> bool:
        """The latest attempt failed (whatever the breaker says)."""
        return self.last_failure_at is not None and (
            self.last_success_at is None or self.last_failure_at > self.last_success_at)


def retry_delay(attempts: int, cfg: ForwardingConfig, server_hint: float | None,
                jitter: Callable[[], float]) -> float:
    """Exponential backoff with jitter per record; a server's Retry-After wins (capped)."""
    if server_hint is not None:
        return max(0.0, min(server_hint, cfg.retry_after_max_seconds))
    cap = min(cfg.retry_max_seconds, cfg.retry_initial_seconds * 2.0 ** min(attempts, 30))
    return cap / 2 + jitter() * cap / 2


class ForwarderHealth:
    """The link's health as answers come in; `Forwarder.__init__` sets the state up."""

    stats: ForwarderStats
    _cfg: ForwardingConfig
    _clock: Callable[[], float]
    _story: DeliveryStory
    _breaker: Breaker
    _cap: InFlightCap
    _bucket: TokenBucket
    _rng: random.Random
    _in_flight: dict[int, float]  # record id -> monotonic start
    _hung_after: float

    def _observe(self, rec: OutboxRecord, d: Delivery) -> None:
        """What one answer says about the link: breaker, bucket, in-flight cap, hung flag."""
        if answered(d) and self.stats.hung:
            self.stats.hung = False
            self._story.answering(self._clock())
        if d.outcome is Outcome.RETRY:
            self._breaker.failed(rec.id)
            if overloaded(d):
                self._cap.overloaded()
            if d.retry_after_seconds is not None and http_status(d.reason) in OVERLOAD_STATUSES:
                # the upstream asked everyone to wait, not just this record
                self._bucket.pause(min(d.retry_after_seconds, self._cfg.retry_after_max_seconds))
        else:
            self._breaker.succeeded()
            self._cap.succeeded()
        self.stats.breaker = self._breaker.state
        self.stats.in_flight_cap = self._cap.current

    def _with_delay(self, rec: OutboxRecord, d: Delivery) -> Delivery:
        """When a RETRY is due again: the server's word, else a short wait while the breaker
        is open (the probe decides when the link is back), else the record's own backoff."""
        if d.outcome is not Outcome.RETRY:
            return d
        if d.retry_after_seconds is None and self._breaker.state is not BreakerState.CLOSED:
            delay = self._cfg.retry_initial_seconds
        else:
            delay = retry_delay(rec.attempts, self._cfg, d.retry_after_seconds, self._rng.random)
        return replace(d, retry_after_seconds=delay)

    def _hung(self) -> None:
        """The oldest request in flight has had no answer for the hung limit."""
        if not self._in_flight:
            return
        self.stats.hung = True
        self._breaker.trip()
        self.stats.breaker = self._breaker.state
        self._story.hung(len(self._in_flight), self._hung_after, self._clock())

    def _account(self, deliveries: Sequence[Delivery], now: float) -> None:
        st = self.stats
        for d in deliveries:
            if d.outcome is Outcome.ACCEPTED:
                st.accepted += 1
            elif d.outcome is Outcome.REJECTED:
                st.rejected += 1
            else:
                st.retried += 1
        if any(d.outcome is not Outcome.RETRY for d in deliveries):
            st.last_success_at = now
        retry = [d for d in deliveries if d.outcome is Outcome.RETRY]
        if retry:
            st.last_failure_at = now
            st.last_error = retry[0].reason
        st.breaker = self._breaker.state
