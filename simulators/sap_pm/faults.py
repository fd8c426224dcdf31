"""Run-time fault switches of the SAP PM simulator: one fault, for N requests or until cleared."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from simulators import httpsim

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
class Fault(httpsim.Fault):
    """The fault one request meets."""

    methods: frozenset[str] | None = None  # None: every method the mode applies to

    def extra_json(self) -> dict[str, Any]:
        return {"methods": None if self.methods is None else sorted(self.methods)}


class Faults(httpsim.FaultSwitch[Fault]):
    """`set(mode, count=None, ...)` arms a fault for the next `count` requests it applies to
    (None: until `clear()`); write-only modes count only POST/PATCH/MERGE/PUT/DELETE."""

    extra_fields = frozenset({"methods"})

    def __init__(self) -> None:
        super().__init__(Fault(FaultMode.NONE))

    def set(self, mode: str | FaultMode, count: int | None = None, *, delay_seconds: float = 1.0,
            status: int = 503, retry_after: float | int | str | None = 1,
            methods: Iterable[str] | None = None) -> None:
        """`methods` narrows the fault to those HTTP methods (e.g. only POST is slow)."""
        only = None if methods is None else frozenset(m.upper() for m in methods)
        self._arm(Fault(FaultMode(mode), delay_seconds, status,
                        httpsim.retry_after_header(retry_after), only), count)

    def take(self, method: str) -> Fault | None:
        """The fault for one incoming API request, counting it down."""
        return self._meet(lambda f: (f.mode not in WRITE_ONLY or method in WRITE_METHODS)
                          and (f.methods is None or method in f.methods))
