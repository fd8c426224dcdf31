"""Run-time fault switches of the Maximo simulator: one fault, for N requests or until cleared."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class FaultMode(enum.StrEnum):
    NONE = "none"
    SLOW = "slow"  # wait delay_seconds, then handle the request (a POST commits late)
    ERROR_5XX = "error_5xx"  # answer `status` with the Error JSON before doing anything
    RATE_429 = "rate_429"  # answer 429 with Retry-After, as a MAS ingress would
    DROP_AFTER_COMMIT = "drop_after_commit"  # writes only: commit, then drop the connection
    CONFLICT_412 = "conflict_412"  # writes to a member: another user saves it just before


@dataclass(frozen=True, slots=True)
class Fault:
    mode: FaultMode
    delay_seconds: float = 1.0
    status: int = 503
    retry_after: str | None = "1"
    writes_only: bool = False  # slow, error_5xx, rate_429: only POSTs meet it


class Faults:
    """`set(mode, count=None, ...)` arms a fault for the next `count` API requests (None: until
    `clear()`). Write-only faults count only the requests they apply to (POSTs that create or
    update; for conflict_412, updates of a member)."""

    def __init__(self) -> None:
        self._fault = Fault(FaultMode.NONE)
        self._remaining: int | None = None

    def set(self, mode: str | FaultMode, count: int | None = None, *, delay_seconds: float = 1.0,
            status: int = 503, retry_after: float | int | str | None = 1,
            writes_only: bool = False) -> None:
        mode = FaultMode(mode)
        if count is not None and count < 0:
            raise ValueError("count must be >= 0")
        if not 100 <= status <= 599:
            raise ValueError(f"status {status} is not an HTTP status")
        if delay_seconds < 0:
            raise ValueError("delay_seconds must be >= 0")
        ra = None if retry_after is None else (
            retry_after if isinstance(retry_after, str) else f"{retry_after:g}")
        self._fault = Fault(mode, delay_seconds, status, ra, writes_only)
        self._remaining = count

    def clear(self) -> None:
        self.set(FaultMode.NONE)

    @property
    def mode(self) -> FaultMode:
        return self._fault.mode

    @property
    def remaining(self) -> int | None:
        return self._remaining

    def take(self, *, write: bool, member_write: bool = False) -> Fault | None:
        """The fault one API request meets, counting it down."""
        fault = self._fault
        if fault.mode is FaultMode.NONE:
            return None
        if (fault.mode is FaultMode.DROP_AFTER_COMMIT or fault.writes_only) and not write:
            return None
        if fault.mode is FaultMode.CONFLICT_412 and not member_write:
            return None
        if self._remaining is not None:
            if self._remaining <= 0:
                self.clear()
                return None
            self._remaining -= 1
            if self._remaining == 0:
                self.clear()
        return fault

    def set_from_json(self, spec: dict[str, Any]) -> None:
        """The `POST /_sim/faults` body: {"mode": ..., "count": N, "delay_seconds": ...}."""
        unknown = set(spec) - {"mode", "count", "delay_seconds", "status", "retry_after",
                               "writes_only"}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if "mode" not in spec:
            raise ValueError("mode is required")
        self.set(spec["mode"], spec.get("count"),
                 delay_seconds=float(spec.get("delay_seconds", 1.0)),
                 status=int(spec.get("status", 503)), retry_after=spec.get("retry_after", 1),
                 writes_only=bool(spec.get("writes_only", False)))

    def as_json(self) -> dict[str, Any]:
        f = self._fault
        return {"mode": str(f.mode), "remaining": self._remaining,
                "delay_seconds": f.delay_seconds, "status": f.status,
                "retry_after": f.retry_after, "writes_only": f.writes_only}
