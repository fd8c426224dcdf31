"""The token bucket, the adaptive in-flight cap and the limits in each upstream's config."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.upstream.limits import (
    MAXIMO_LIMITS,
    SAP_PM_LIMITS,
    InFlightCap,
    TokenBucket,
    UpstreamLimits,
    client_timeout,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 5, clock)
    assert bucket.available() == 5
    bucket.take(5)
    assert bucket.available() == 0
    assert bucket.wait() == pytest.approx(0.1)
    clock.now += 0.35
    assert bucket.available() == 3
    clock.now += 100
    assert bucket.available() == 5  # never above the burst


def test_retry_after_pauses_the_whole_bucket_then_one_goes_alone() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 5, clock)
    bucket.pause(2.0)
    assert bucket.available() == 0 and bucket.wait() == pytest.approx(2.0)
    bucket.pause(0.5)  # a shorter pause never shortens a longer one
    assert bucket.paused_for == pytest.approx(2.0)
    clock.now += 2.0
    assert bucket.available() == 1


def test_an_unlimited_bucket_still_honours_a_pause() -> None:
    clock = Clock()
    bucket = TokenBucket(None, 1, clock)
    assert bucket.available() > 1000 and bucket.wait() == 0.0
    bucket.pause(1.0)
    assert bucket.available() == 0
    clock.now += 1.0
    assert bucket.available() > 1000


def test_adaptive_cap_grows_by_one_and_halves() -> None:
    cap = InFlightCap(8, adaptive=True)
    cap.overloaded()
    cap.overloaded()
    assert cap.current == 2
    cap.succeeded()
    assert cap.current == 2  # one success of a window of two
    cap.succeeded()
    assert cap.current == 3
    for _ in range(3 + 4 + 5 + 6 + 7 - 1):
        cap.succeeded()
    assert cap.current == 7
    cap.succeeded()
    assert cap.current == 8
    for _ in range(20):
        cap.succeeded()
    assert cap.current == 8  # never above the maximum
    for _ in range(10):
        cap.overloaded()
    assert cap.current == 1
    fixed = InFlightCap(8, adaptive=False)
    fixed.overloaded()
    assert fixed.current == 8


def test_limits_are_validated_and_have_per_upstream_defaults() -> None:
    with pytest.raises(ValidationError):
        UpstreamLimits(max_in_flight=0)
    with pytest.raises(ValidationError):
        UpstreamLimits.model_validate({"max_in_fligth": 3})  # a typo is an error
    assert (SAP_PM_LIMITS.max_requests_per_second, SAP_PM_LIMITS.max_in_flight) == (10.0, 4)
    assert (MAXIMO_LIMITS.max_requests_per_second, MAXIMO_LIMITS.max_in_flight) == (5.0, 4)


def test_client_timeout_caps_first_byte_at_total() -> None:
    t = client_timeout(1.0, 10.0, 2.0)
    assert (t.sock_connect, t.sock_read, t.total) == (1.0, 2.0, 2.0)
