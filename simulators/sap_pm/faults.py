"""Run-time fault switches of the SAP PM simulator: one fault, for N requests or until cleared."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "MERGE", "DELETE"})


class FaultMode(enum.StrEnum):
    NONE = "none"
    SLOW = "slow"  # answer after delay_seconds
    ERROR_5XX = "error_5xx"  # answer `status` (OData error body) before doing anything
    RATE_429 = "rate_429"  # answer 429 with Retry-After (an API-management front end)
    DROP_AFTER_COMMIT = "drop_after_commit"  # writes only: commit, then drop the connection
    EXPIRE_SESSION = "expire_session"  # writes only: all sessions end first, so CSRF 403


# Modes that only meet modifying requests (and only count those).
WRITE_ONLY = frozenset({FaultMode.DROP_AFTER_COMMIT, FaultMode.EXPIRE_SESSION})


@dataclass(frozen=True, slots=True)
class Fault:
    """The fault one request meets."""

    mode: FaultMode
    delay_seconds: float = 1.0
    status: int = 503
    retry_after: str | None = "1"
    methods: frozenset[str] | None = None  # None: every method the mode applies to


class Faults:
    """`set(mode, count=None, ...)` arms a fault for the next `count` requests it applies to
    (None: until `clear()`); write-only modes count only POST/PATCH/MERGE/PUT/DELETE."""

    def __init__(self) -> None:
        self._fault = Fault(FaultMode.NONE)
        self._remaining: int | None = None

    def set(self, mode: str | FaultMode, count: int | None = None, *, delay_seconds: float = 1.0,
            status: int = 503, retry_after: float | int | str | None = 1,
            methods: Iterable[str] | None = None) -> None:
        """`methods` narrows the fault to those HTTP methods (e.g. only POST is slow)."""
        mode = FaultMode(mode)
        if count is not None and count < 0:
            raise ValueError("count must be >= 0")
        if not 100 <= status <= 599:
            raise ValueError(f"status {status} is not an HTTP status")
        if delay_seconds < 0:
            raise ValueError("delay_seconds must be >= 0")
        ra = None if retry_after is None else (
            retry_after if isinstance(retry_after, str) else f"{retry_after:g}")
        only = None if methods is None else frozenset(m.upper() for m in methods)
        self._fault = Fault(mode, delay_seconds, status, ra, only)
        self._remaining = count

    def clear(self) -> None:
        self.set(FaultMode.NONE)

    def set_from_json(self, spec: dict[str, Any]) -> None:
        """The `POST /_sim/faults` body: {"mode": ..., "count": N, "delay_seconds": ...}."""
        allowed = {"mode", "count", "delay_seconds", "status", "retry_after", "methods"}
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if "mode" not in spec:
            raise ValueError("mode is required")
        self.set(spec["mode"], spec.get("count"),
                 delay_seconds=float(spec.get("delay_seconds", 1.0)),
                 status=int(spec.get("status", 503)), retry_after=spec.get("retry_after", 1),
                 methods=spec.get("methods"))

    @property
    def mode(self) -> FaultMode:
        return self._fault.mode

    @property
    def remaining(self) -> int | None:
        return self._remaining

    def take(self, method: str) -> Fault | None:
        """The fault for one incoming API request, counting it down."""
        fault = self._fault
        if fault.mode is FaultMode.NONE:
            return None
        if fault.mode in WRITE_ONLY and method not in WRITE_METHODS:
            return None
        if fault.methods is not None and method not in fault.methods:
            return None
        if self._remaining is not None:
            if self._remaining <= 0:
                self.clear()
                return None
            self._remaining -= 1
            if self._remaining == 0:
                self.clear()
        return fault

    def as_json(self) -> dict[str, Any]:
        f = self._fault
        return {"mode": str(f.mode), "remaining": self._remaining,
                "delay_seconds": f.delay_seconds, "status": f.status,
                "retry_after": f.retry_after,
                "methods": None if f.methods is None else sorted(f.methods)}
