"""The retry classifier as a table, and Retry-After parsing."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from gateway.model import Outcome
from gateway.upstream.retry_policy import classify_status, parse_retry_after

A, R, X = Outcome.ACCEPTED, Outcome.RETRY, Outcome.REJECTED

TABLE = [
    (200, A), (201, A), (202, A), (204, A),
    (301, X), (302, X), (303, X), (307, X), (308, X),
    (400, X), (401, X), (403, X), (404, X), (405, X), (410, X), (413, X), (415, X), (422, X),
    (408, R), (409, R), (425, R), (429, R),
    (500, R), (502, R), (503, R), (504, R), (507, R), (599, R),
]


@pytest.mark.parametrize(("status", "outcome"), TABLE)
def test_classification_table(status: int, outcome: Outcome) -> None:
    verdict = classify_status(status, "Validation failed - title: required")
    assert verdict.outcome is outcome
    if outcome is not Outcome.ACCEPTED:
        assert verdict.reason.startswith(f"HTTP {status}: Validation failed")


def test_redirect_reason_says_redirects_are_not_followed() -> None:
    assert "redirects are not followed" in classify_status(307).reason


def test_retry_after_is_passed_on_for_retries_only() -> None:
    assert classify_status(429, retry_after="12").retry_after_seconds == 12.0
    assert classify_status(503, retry_after="0").retry_after_seconds == 0.0
    assert classify_status(503).retry_after_seconds is None
    assert classify_status(400, retry_after="12").retry_after_seconds is None


def test_retry_after_seconds_and_http_date() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 5 ", now) == 5.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == 30.0
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now) == 0.0  # already past
    for bad in (None, "", "soon", "-5", "1.5", "Wed, 99 Foo 2037 07:28:00 GMT"):
        assert parse_retry_after(bad, now) is None, bad
