"""Run-time fault switches of the CMMS simulator: one fault, for N requests or until cleared."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from simulators import httpsim


class FaultMode(enum.StrEnum):
    NONE = "none"
    SLOW = "slow"  # answer after delay_seconds (POSTs: while the idempotency key is in flight)
    ERROR_5XX = "error_5xx"  # answer `status` before doing anything
    RATE_429 = "rate_429"  # answer 429 with Retry-After (seconds or an HTTP-date)
    DROP_AFTER_COMMIT = "drop_after_commit"  # POSTs only: commit, then drop the connection
    HANG = "hang"  # accept and never answer (until the simulator stops or goes down)


@dataclass(frozen=True, slots=True)
class Fault(httpsim.Fault):
    """The fault one request meets. With `match_body`, only POSTs whose body contains that text
    meet it (one episode's create, picked by its title, asset or dedup key): everything else
    passes untouched, so a test can refuse one record for good and watch the others flow."""

    match_body: str | None = None

    def extra_json(self) -> dict[str, Any]:
        return {"match_body": self.match_body}

    def applies(self, method: str, body: bytes) -> bool:
        if self.mode is FaultMode.DROP_AFTER_COMMIT and method != "POST":
            return False
        if self.match_body is None:
            return True
        return method == "POST" and self.match_body.encode() in body


class Faults(httpsim.FaultSwitch[Fault]):
    """`set(mode, count=None, ...)` arms a fault for the next `count` API requests (None: until
    `clear()`). `drop_after_commit` counts only POSTs, the requests that commit something;
    a fault with `match_body` counts only the POSTs it matches."""

    extra_fields: ClassVar[frozenset[str]] = frozenset({"match_body"})

    def __init__(self) -> None:
        super().__init__(Fault(FaultMode.NONE))

    def set(self, mode: str | FaultMode, count: int | None = None, *, delay_seconds: float = 1.0,
            status: int = 503, retry_after: float | int | str | None = 1,
            match_body: str | None = None) -> None:
        if match_body is not None and not match_body:
            raise ValueError("match_body must not be empty (leave it out to match everything)")
        self._arm(Fault(FaultMode(mode), delay_seconds, status,
                        httpsim.retry_after_header(retry_after), match_body), count)

    @property
    def needs_body(self) -> bool:
        """Whether `take` must see the request body to decide (a `match_body` fault)."""
        return self.fault.match_body is not None

    def take(self, method: str, body: bytes = b"") -> Fault | None:
        """The fault for one incoming API request, counting it down."""
        return self._meet(lambda f: f.applies(method, body))


class TokenBucket:
    """A steady rate limit like a SaaS API's: `rate_per_second` refill, `burst` capacity."""

    def __init__(self, rate_per_second: float, burst: int, clock: Callable[[], float]) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("rate_per_second must be > 0 and burst >= 1")
        self._rate = rate_per_second
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()

    def take(self) -> float:
        """0.0 when the request may pass, else the seconds until a token is free."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate
